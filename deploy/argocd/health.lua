-- Argo CD health of mx-operator's MailGateway and MailDomain. Both follow the kstatus
-- conventions (a Ready condition, status.observedGeneration), which Flux reads as is.
--   Healthy      Ready=True for the current generation
--   Progressing  no status yet, an older generation, Ready=Unknown, or gateway replicas
--                still starting
--   Degraded     Ready=False (the reason and message say why: InvalidSpec, Conflict,
--                Departed, a DNS or recipient-list problem, ...)
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "The operator has not acted on generation " .. generation .. " yet"
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    hs.message = (condition.reason or "") .. ": " .. (condition.message or "")
    if condition.status == "True" then
      hs.status = "Healthy"
    elseif condition.status == "False" and condition.reason ~= "ReplicasNotReady" then
      hs.status = "Degraded"
    end
    return hs
  end
end
return hs
