// Mint session values with the frameworks' own libraries, for the bridge's tests to verify.
// Input (argv[2]): a JSON list of jobs; output (stdout): a JSON list of results, in order.
//   {"kind": "authjs", "token": {...}, "secret": "...", "salt": "<cookie name>", "maxAge": 60}
//   {"kind": "next-auth-v4", "token": {...}, "secret": "...", "maxAge": 60}
//   {"kind": "react-router", "data": {...}, "secrets": ["new", "old"], "name": "__session"}
import { encode as authjsEncode } from "@auth/core/jwt";
// SessionStore is internal to @auth/core (not in its exports): imported by file.
import { SessionStore } from "./node_modules/@auth/core/lib/utils/cookie.js";
import nextAuthJwt from "next-auth/jwt";
import nextAuthCookie from "./node_modules/next-auth/core/lib/cookie.js";
import { createCookieSessionStorage } from "react-router";

const quiet = { debug() {}, warn() {}, error() {} };

async function mint(job) {
  if (job.kind === "authjs") {
    const value = await authjsEncode({ token: job.token, secret: job.secret, salt: job.salt, maxAge: job.maxAge });
    // Auth.js's own chunking of a long session cookie into name.0, name.1, ...
    const store = new SessionStore({ name: job.salt, options: {} }, {}, quiet);
    const cookies = Object.fromEntries(store.chunk(value, {}).map((c) => [c.name, c.value]));
    return { value, cookies };
  }
  if (job.kind === "next-auth-v4") {
    const value = await nextAuthJwt.encode({ token: job.token, secret: job.secret, maxAge: job.maxAge });
    // NextAuth v4's own chunking, as its session route sets the cookie.
    const store = new nextAuthCookie.SessionStore({ name: "next-auth.session-token", options: {} }, { cookies: {} }, quiet);
    const cookies = Object.fromEntries(store.chunk(value, {}).map((c) => [c.name, c.value]));
    return { value, cookies };
  }
  if (job.kind === "react-router") {
    const storage = createCookieSessionStorage({
      cookie: { name: job.name, secrets: job.secrets, httpOnly: true, sameSite: "lax" },
    });
    const session = await storage.getSession();
    for (const [key, value] of Object.entries(job.data)) session.set(key, value);
    const header = await storage.commitSession(session);
    const pair = header.split(";")[0];
    return { header: pair, value: pair.slice(pair.indexOf("=") + 1) };
  }
  throw new Error(`unknown kind ${job.kind}`);
}

const jobs = JSON.parse(process.argv[2]);
const out = [];
for (const job of jobs) out.push(await mint(job));
process.stdout.write(JSON.stringify(out));
