-- Argo CD health check for remedy.dev/v1alpha1 Remediation.
-- Runs in Argo CD's restricted Lua (base, table, package and a safe os; no `string`
-- library), so messages are built with `..` only.
--   no status / no phase yet, or status older than metadata.generation -> Progressing
--   Pending, Running, Verifying                                          -> Progressing
--   AwaitingApproval                                                     -> Suspended
--   Succeeded, Skipped                                                   -> Healthy
--   Failed                                                               -> Degraded
--   any other phase                                                      -> Unknown
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

-- "Reason: message", or whichever of the two is set; nil when both are empty.
-- A reason equal to `skip` (the phase name) is left out as it would repeat the prefix.
local function describe(c, skip)
  if c == nil then
    return nil
  end
  local reason = c.reason
  local message = c.message
  if reason == "" or reason == skip then reason = nil end
  if message == "" then message = nil end
  if reason ~= nil and message ~= nil then
    return reason .. ": " .. message
  end
  return reason or message
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
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
local phase = status.phase
local statusMessage = status.message
if statusMessage == "" then statusMessage = nil end

-- First condition (in the order given) with something to say, else status.message, else default.
local function explain(types, default)
  for _, t in ipairs(types) do
    local text = describe(findCondition(conditions, t), phase)
    if text ~= nil then
      return text
    end
  end
  return statusMessage or default
end

if phase == "Pending" then
  hs.status = "Progressing"
  hs.message = "Pending: " .. explain({"Validated"}, "waiting to start")
elseif phase == "Running" then
  hs.status = "Progressing"
  hs.message = "Running: " .. explain({"Executed"}, "executing the action")
elseif phase == "Verifying" then
  hs.status = "Progressing"
  hs.message = "Verifying: " .. explain({"Verified"}, "checking that the remediation worked")
elseif phase == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = "Awaiting approval: " .. explain({"Approved"}, "approve or let it expire")
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Succeeded: " .. explain({"Completed", "Verified"}, "remediation completed")
elseif phase == "Skipped" then
  hs.status = "Healthy"
  hs.message = "Skipped: " .. explain({"Completed", "Executed"}, "no reason given")
elseif phase == "Failed" then
  hs.status = "Degraded"
  -- The failing condition: the first False one in lifecycle order. Completed is True
  -- once the phase is final, so it only serves as the summary when none is False.
  local failing = nil
  for _, t in ipairs({"Validated", "Approved", "Executed", "Verified"}) do
    local c = findCondition(conditions, t)
    if failing == nil and c ~= nil and c.status == "False" then
      failing = c
    end
  end
  if failing ~= nil then
    hs.message = "Failed: " .. failing.type .. " is False: " .. (describe(failing, nil) or "no reason given")
  else
    hs.message = "Failed: " .. explain({"Completed"}, "no failing condition reported")
  end
else
  hs.status = "Unknown"
  hs.message = "Unrecognised phase " .. tostring(phase)
end
return hs
