-- Argo CD health of an autotune.dwcp.io/OptimizationRun (resource.customizations.health.autotune.dwcp.io_OptimizationRun).
-- Healthy: it finished and left the stable configuration at least as good as it found it.
-- Progressing: pretraining, proposing or rolling a canary out, or the operator has not seen the latest spec yet.
-- Suspended: a person's turn (paused, a canary awaiting approval, a canary held after inconclusive analyses).
-- Degraded: failed, aborted, something in its way (Degraded=True), or every canary was rolled back for want of metrics.
local hs = {}
local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end
local function say(status, message)
  hs.status = status
  hs.message = message
  return hs
end

if obj.status == nil or obj.status.phase == nil then
  return say("Progressing", "Waiting for the operator to pick the run up")
end
local status = obj.status
local message = status.message or ""
if obj.metadata ~= nil and obj.metadata.generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < obj.metadata.generation then
  return say("Progressing", "Waiting for the operator to observe generation " .. obj.metadata.generation)
end
local phase = status.phase
if phase == "Failed" then
  return say("Degraded", message)
end
if phase == "Aborted" then
  return say("Degraded", message)
end
local succeeded = condition("Succeeded")
if phase == "Succeeded" or phase == "Unchanged" then
  return say("Healthy", message)
end
if phase == "RolledBack" then
  if succeeded ~= nil and succeeded.reason == "MetricsUnavailable" then
    return say("Degraded", message)
  end
  return say("Healthy", message)
end
local progressing = condition("Progressing")
if progressing ~= nil and progressing.status == "False" then
  if progressing.reason == "Paused" or progressing.reason == "AwaitingApproval" or progressing.reason == "Held" then
    return say("Suspended", message)
  end
end
local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  return say("Degraded", degraded.reason .. ": " .. (degraded.message or ""))
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "False" then
  return say("Progressing", ready.reason .. ": " .. (ready.message or ""))
end
return say("Progressing", message)
