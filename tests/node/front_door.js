// The official twilio Node.js package against the connector's Twilio-compatible front door.
// Only the base URL differs from talking to Twilio. Prints one JSON object of what it saw;
// tests/flow/test_facade_node.py starts the local stack, runs this and judges the result.
"use strict";

const twilio = require("twilio");

const { BASE, ACCOUNT, TOKEN, TO, FROM, MG, CALLBACK } = process.env;

function client(account, token) {
  const c = twilio(account, token);
  c.api.baseUrl = BASE;
  return c;
}

async function refusal(promise) {
  try {
    await promise;
    return null;
  } catch (err) {
    return { status: err.status, code: err.code };
  }
}

async function main() {
  const c = client(ACCOUNT, TOKEN);
  const seen = {};
  const sms = await c.messages.create({ to: TO, from: FROM, body: "From Node", statusCallback: CALLBACK });
  seen.created = { sid: sms.sid, status: sms.status, numSegments: sms.numSegments };
  const mms = await c.messages.create({ to: TO, from: FROM, body: "Look", mediaUrl: ["https://example.com/a.jpg"] });
  seen.mms = { sid: mms.sid, numMedia: mms.numMedia };
  let fetched = sms;
  for (let i = 0; i < 200 && fetched.status !== "delivered"; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    fetched = await c.messages(sms.sid).fetch();
  }
  seen.fetched = { status: fetched.status, dateSent: fetched.dateSent !== null, errorCode: fetched.errorCode };
  const listed = await c.messages.list({ to: TO, pageSize: 1 });
  seen.listed = listed.map((m) => m.sid);
  seen.invalid = await refusal(c.messages.create({ to: "+1555", from: FROM, body: "x" }));
  seen.wrongToken = await refusal(client(ACCOUNT, "not-the-token").messages.create({ to: TO, from: FROM, body: "x" }));
  seen.missing = await refusal(c.messages("SM" + "0".repeat(32)).fetch());
  const sendAt = new Date(Date.now() + 3600 * 1000);
  const later = await c.messages.create({
    to: TO, messagingServiceSid: MG, body: "Later", sendAt, scheduleType: "fixed",
  });
  seen.scheduled = later.status;
  let canceled = null;
  for (let i = 0; i < 100 && canceled === null; i += 1) {
    try {
      canceled = await c.messages(later.sid).update({ status: "canceled" });
    } catch (err) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  seen.canceled = canceled && canceled.status;
  const account = await c.api.v2010.accounts(ACCOUNT).fetch();
  seen.account = { sid: account.sid, status: account.status, authToken: account.authToken || null };
  process.stdout.write(JSON.stringify(seen));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(1);
});
