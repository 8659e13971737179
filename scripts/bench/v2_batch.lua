-- wrk script: Mailjet Version 2 batches, a JSON array of EVENTS_PER_REQUEST distinct events.
--
-- Every event of every batch has its own MessageID, (thread + 1) * 10^12 + counter, so
-- bouncewatch stores all of them (its dedup key is (event, time, MessageID, email, url)).
-- Event times are the wall clock minus 0-3 s, as Mailjet posts events seconds after they happen:
-- the windows count every event in its live buckets, and the journal's dedup keys (which lead
-- with the time) see the layout real traffic gives them.
-- The elements are short formatted strings joined with table.concat, to keep wrk's Lua cost
-- small next to the server's on a shared 2-core machine.

local EVENTS_PER_REQUEST = 100

local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
end

wrk.method = "POST"
wrk.path = "/webhooks/mailjet"
wrk.headers["Content-Type"] = "application/json"

-- %s slots: time, MessageID, mj_message_id.
local templates = {
  '{"event":"sent","time":%s,"MessageID":%s,"Message_GUID":"1ab23cd4-e567-8901-2345-6789f0ab1c2d",'
    .. '"email":"api@mailjet.com","mj_campaign_id":7257,"mj_contact_id":4,"customcampaign":"",'
    .. '"mj_message_id":"%s","smtp_reply":"sent (250 2.0.0 OK)","CustomID":"helloworld","Payload":""}',
  '{"event":"open","time":%s,"MessageID":%s,"Message_GUID":"1ab23cd4-e567-8901-2345-6789f0ab1c2d",'
    .. '"email":"api@mailjet.com","mj_campaign_id":7173,"mj_contact_id":320,"customcampaign":"",'
    .. '"mj_message_id":"%s","CustomID":"helloworld","Payload":"","ip":"127.0.0.1","geo":"US",'
    .. '"agent":"Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0"}',
  '{"event":"bounce","time":%s,"MessageID":%s,"Message_GUID":"1ab23cd4-e567-8901-2345-6789f0ab1c2d",'
    .. '"email":"bounce@mailjet.com","mj_campaign_id":0,"mj_contact_id":0,"customcampaign":"",'
    .. '"mj_message_id":"%s","CustomID":"helloworld","Payload":"","blocked":false,"hard_bounce":true,'
    .. '"error_related_to":"recipient","error":"user unknown","comment":"Host or domain name not found"}',
}

local counter = 0
local base
local parts = {}
local format = string.format

function init(args)
  base = (thread_index + 1) * 1e12
end

function request()
  for i = 1, EVENTS_PER_REQUEST do
    counter = counter + 1
    local id = format("%.0f", base + counter)
    parts[i] = format(templates[counter % 3 + 1], os.time() - counter % 4, id, id)
  end
  return wrk.format(nil, nil, nil, "[" .. table.concat(parts, ",") .. "]")
end
