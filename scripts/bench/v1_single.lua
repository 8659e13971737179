-- wrk script: one Mailjet Version 1 event per request (a single JSON object), every one distinct.
--
-- bouncewatch deduplicates on (event, time, MessageID, email, url), so a repeated body would be
-- counted as a duplicate and be cheaper than a real one. Each wrk thread owns a MessageID range,
-- (thread + 1) * 10^12 + counter, so no two requests of a run carry the same event.
-- Event times are the wall clock minus 0-3 s, as Mailjet posts events seconds after they happen:
-- the windows count every event in its live buckets, and the journal's dedup keys (which lead
-- with the time) see the layout real traffic gives them.
-- Bodies rotate through sent / open / bounce objects shaped like the Mailjet fixtures (~400 B).

local next_thread = 0

-- Runs once per thread, in the main Lua state, before the threads start.
function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
end

wrk.method = "POST"
wrk.path = "/webhooks/mailjet"
wrk.headers["Content-Type"] = "application/json"

-- %s slots: time, MessageID, mj_message_id (the same id, as Mailjet sends it, as a string).
local templates = {
  '{"event":"sent","time":%s,"MessageID":%s,"Message_GUID":"1ab23cd4-e567-8901-2345-6789f0ab1c2d",'
    .. '"email":"api@mailjet.com","mj_campaign_id":7257,"mj_contact_id":4,"customcampaign":"",'
    .. '"mj_message_id":"%s","smtp_reply":"sent (250 2.0.0 OK 1433333948 fa5si855896wjc.199 - gsmtp)",'
    .. '"CustomID":"helloworld","Payload":""}',
  '{"event":"open","time":%s,"MessageID":%s,"Message_GUID":"1ab23cd4-e567-8901-2345-6789f0ab1c2d",'
    .. '"email":"api@mailjet.com","mj_campaign_id":7173,"mj_contact_id":320,"customcampaign":"",'
    .. '"mj_message_id":"%s","CustomID":"helloworld","Payload":"","ip":"127.0.0.1","geo":"US",'
    .. '"agent":"Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0"}',
  '{"event":"bounce","time":%s,"MessageID":%s,"Message_GUID":"1ab23cd4-e567-8901-2345-6789f0ab1c2d",'
    .. '"email":"bounce@mailjet.com","mj_campaign_id":0,"mj_contact_id":0,"customcampaign":"",'
    .. '"mj_message_id":"%s","CustomID":"helloworld","Payload":"","blocked":false,"hard_bounce":true,'
    .. '"error_related_to":"recipient","error":"user unknown",'
    .. '"comment":"Host or domain name not found. Name service error for name=lbjsnrftlsiuvbsren.com type=A: Host not found"}',
}

local counter = 0
local base

function init(args)
  -- %.0f, not %d: ids pass 2^31 and are kept exact as doubles up to 2^53.
  base = (thread_index + 1) * 1e12
end

function request()
  counter = counter + 1
  local id = string.format("%.0f", base + counter)
  local time = os.time() - counter % 4
  local body = string.format(templates[counter % 3 + 1], time, id, id)
  return wrk.format(nil, nil, nil, body)
end
