// A browser XMPP library (@xmpp/client, its WebSocket transport) driven from Node by a test
// (tests/xmpp/test_websocket_client.py). Usage: node client.mjs <ws-url> <domain> <user> <password> <resource>
// It logs in over RFC 7395, prints one JSON object per line for what happens
// ({"event": "online"|"message"|"presence"|"offline"|"error", ...}) and reads one JSON command
// per line from stdin: {"send": {"to": ..., "body": ..., "type": "chat"}}, {"presence": {}}, {"stop": true}.
import { client, xml } from "@xmpp/client";
import readline from "node:readline";

const [url, domain, username, password, resource] = process.argv.slice(2);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const xmpp = client({ service: url, domain, username, password, resource });
xmpp.reconnect.stop(); // a test wants to see a lost connection, not a silent retry

xmpp.on("error", (err) => say({ event: "error", message: String(err && (err.message || err)) }));
xmpp.on("offline", () => say({ event: "offline" }));
xmpp.on("stanza", (stanza) => {
  if (stanza.is("message")) {
    say({ event: "message", from: stanza.attrs.from, type: stanza.attrs.type || "normal",
          body: stanza.getChildText("body") });
  } else if (stanza.is("presence")) {
    say({ event: "presence", from: stanza.attrs.from, type: stanza.attrs.type || "available" });
  }
});
xmpp.on("online", (address) => say({ event: "online", jid: address.toString() }));

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  const command = JSON.parse(line);
  try {
    if (command.send) {
      const { to, body, type = "chat" } = command.send;
      await xmpp.send(xml("message", { to, type }, xml("body", {}, body)));
      say({ event: "sent", to });
    } else if (command.presence) {
      await xmpp.send(xml("presence"));
    } else if (command.stop) {
      await xmpp.stop();
      process.exit(0);
    }
  } catch (err) {
    say({ event: "error", message: String(err && (err.message || err)) });
  }
});
lines.on("close", () => xmpp.stop().finally(() => process.exit(0)));

xmpp.start().catch((err) => {
  say({ event: "error", message: String(err && (err.message || err)) });
  process.exit(1);
});
