-- Argo CD health of an autotune.dwcp.io/ParameterProfile (resource.customizations.health.autotune.dwcp.io_ParameterProfile).
-- Healthy when the operator validated the current spec (Ready=True); Degraded with the reason when it did not
-- (a ConfigMap missing or out of bounds, a query Prometheus rejects, ...); Progressing until it has looked.
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the profile"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate generation " .. obj.metadata.generation
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    if c.status == "True" then
      hs.status = "Healthy"
    else
      hs.status = "Degraded"
    end
    hs.message = c.reason .. ": " .. (c.message or "")
    return hs
  end
end
hs.status = "Progressing"
hs.message = "Waiting for the operator to validate the profile"
return hs
