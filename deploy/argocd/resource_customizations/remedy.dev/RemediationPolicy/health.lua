-- Argo CD health check for remedy.dev RemediationPolicy.
-- Runs in Argo CD's restricted Lua (no `string` library): messages use `..` only.
--   no status yet, or status older than the spec     -> Progressing
--   spec.paused true (a person paused it; Paused
--   reason PausedBySpec)                             -> Suspended
--   Paused=True without spec.paused (remedy paused
--   itself, reason TooManyFailures or any other)     -> Degraded
--   Degraded=True                                    -> Degraded
--   Ready=True                                       -> Healthy
--   anything else (Ready False/Unknown/absent)       -> Progressing
local hs = {}

local function findCondition(conditions, condType)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == condType then
      return c
    end
  end
  return nil
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

-- "Reason: message", or whichever of the two is set; nil when both are empty.
local function describe(c)
  if c == nil then
    return nil
  end
  local reason = c.reason
  local message = c.message
  if reason == "" then reason = nil end
  if message == "" then message = nil end
  if reason ~= nil and message ~= nil then
    return reason .. ": " .. message
  end
  return reason or message
end

local status = obj.status
if status == nil or (status.observedGeneration == nil and status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for remedy to observe"
  return hs
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for remedy to observe generation " .. generation .. " (status is for generation " .. observed .. ")"
  return hs
end

local conditions = status.conditions
local paused = findCondition(conditions, "Paused")
local degraded = findCondition(conditions, "Degraded")
local ready = findCondition(conditions, "Ready")
local specPaused = obj.spec ~= nil and obj.spec.paused == true

if specPaused then
  hs.status = "Suspended"
  hs.message = "Paused by spec.paused"
  if isTrue(paused) and describe(paused) ~= nil then
    hs.message = hs.message .. " (" .. describe(paused) .. ")"
  end
elseif isTrue(paused) then
  hs.status = "Degraded"
  hs.message = "Paused by remedy: " .. (describe(paused) or "no reason given")
elseif isTrue(degraded) then
  hs.status = "Degraded"
  hs.message = describe(degraded) or "Degraded"
elseif isTrue(ready) then
  hs.status = "Healthy"
  hs.message = describe(ready) or "Ready"
else
  hs.status = "Progressing"
  if ready ~= nil then
    hs.message = "Not ready: " .. (describe(ready) or ("Ready is " .. tostring(ready.status)))
  else
    hs.message = "Waiting for the Ready condition"
  end
end
return hs
