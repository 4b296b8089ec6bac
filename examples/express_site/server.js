// Kettle & Leaf, Express edition: a small shop whose login is express-session in Redis
// (connect-redis), as many Express sites have it. It knows nothing about the bridge; the
// bridge reads the same signed connect.sid cookie and the same session in the same Redis.
import express from "express";
import session from "express-session";
import { RedisStore } from "connect-redis";
import { createClient } from "redis";

const env = process.env;
const port = Number(env.PORT || 3000);
const secrets = (env.SESSION_SECRET || "").split(",").map((s) => s.trim()).filter(Boolean);
if (!secrets.length || secrets.some((s) => s.length < 32)) {
  console.error("SESSION_SECRET: set it to a key of 32+ characters (a comma-separated list, newest first)");
  process.exit(2);
}
const trustedNext = (env.SHOP_TRUSTED_NEXT_ORIGINS || "").split(",").map((s) => s.trim()).filter(Boolean);

// Demo accounts; a real shop has its user table here.
const USERS = {
  alice: { password: "demo-password", email: "alice@example.com", groups: ["customers"] },
  bob: { password: "demo-password", email: "bob@example.com", groups: [] },
};

const redis = createClient({ url: env.REDIS_URL || "redis://127.0.0.1:6379/0" });
redis.on("error", (err) => console.error("redis:", err.message));
await redis.connect();

const app = express();
app.disable("x-powered-by");
app.use(express.urlencoded({ extended: false, limit: "8kb" }));
app.use(
  session({
    store: new RedisStore({ client: redis, prefix: "sess:" }),
    secret: secrets, // the first signs; all are accepted (rotation)
    name: "connect.sid",
    resave: false,
    saveUninitialized: false,
    cookie: { httpOnly: true, sameSite: "lax", secure: env.SHOP_COOKIE_SECURE === "1", maxAge: 14 * 86400 * 1000 },
  }),
);

// Forms are same-origin only: a cross-site page cannot sign a visitor in or out.
app.use((req, res, next) => {
  if (req.method === "POST") {
    const origin = req.get("origin");
    const own = `${req.protocol}://${req.get("host")}`;
    if (origin && origin !== own) return res.status(403).send("cross-site form refused");
  }
  next();
});

function safeNext(value) {
  if (typeof value !== "string" || !value) return "/";
  if (value.startsWith("/") && !value.startsWith("//") && !value.includes("\\")) return value;
  try {
    const url = new URL(value);
    if (trustedNext.includes(url.origin)) return url.href;
  } catch {}
  return "/";
}

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (body) => `<!doctype html><meta charset="utf-8"><title>Kettle &amp; Leaf</title><body>${body}</body>`;

app.get("/", (req, res) => {
  const user = req.session.userId;
  res.send(page(user
    ? `<p>Signed in as ${escape(user)}.</p><form method="post" action="/logout"><button>Sign out</button></form>`
    : `<p>Signed out. <a href="/login">Sign in</a></p>`));
});

app.get("/login", (req, res) => {
  res.send(page(`<form method="post" action="/login">
    <input type="hidden" name="next" value="${escape(safeNext(req.query.next))}">
    <label>User <input name="username"></label> <label>Password <input name="password" type="password"></label>
    <button>Sign in</button></form>`));
});

app.post("/login", (req, res, next) => {
  const { username, password, next: nextUrl } = req.body || {};
  const user = Object.hasOwn(USERS, username) ? USERS[username] : null;
  if (!user || user.password !== password) return res.status(401).send(page("<p>Wrong user or password.</p>"));
  // A fresh session id at login, so an id planted before it is worth nothing.
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.userId = username;
    req.session.email = user.email;
    req.session.groups = user.groups;
    req.session.save((err2) => (err2 ? next(err2) : res.redirect(303, safeNext(nextUrl))));
  });
});

app.post("/logout", (req, res, next) => {
  // Destroying the session in Redis is what ends the avatar session too.
  req.session.destroy((err) => {
    if (err) return next(err);
    res.clearCookie("connect.sid");
    res.redirect(303, "/");
  });
});

const server = app.listen(port, "127.0.0.1", () => console.log(`Kettle & Leaf (Express) on http://127.0.0.1:${port}`));
const stop = () => server.close(() => redis.quit().finally(() => process.exit(0)));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
