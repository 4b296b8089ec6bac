/*
 * A local stand-in for Sentifyd's <sentifyd-bot> web component.
 *
 * Used ONLY by the embedded demo and by browser tests: the real component loads from Sentifyd's CDN,
 * which is not reachable offline. It speaks the same protocol as the real one and shows it:
 *
 *   GET <token-endpoint>                          (same-origin cookies)  -> {tokens, avatarParameters}
 *   GET <token-endpoint>?refreshToken=<handle>    shortly before the access token expires
 *
 * Like the real component it keeps what it received in sessionStorage ("sentifyd-bot:<avatar-id>"),
 * so tests can prove that only the bridge's opaque handle, never Sentifyd's refresh token, reaches it.
 *
 * State for automated tests, as attributes on the host element:
 *   data-status         "loading" | "ready" | "refreshing" | "error"
 *   data-refresh-count  successful refreshes so far
 *   data-error          last error code, "" when the last exchange succeeded
 *   data-expires-in     seconds until the current access token expires
 * Methods: element.refreshNow(), element.retry().
 * Event: "sentifyd-standin:exchange" (bubbles, composed) after every exchange, detail {kind, status, ok, error}.
 *
 * No inline handlers (the page's CSP forbids them) and no request other than to the token endpoint.
 */
(() => {
  "use strict";

  const TAG = "sentifyd-bot";
  if (!("customElements" in window) || customElements.get(TAG)) return;

  const REFRESH_LEAD_S = 2; // refresh this long before the access token expires
  const MIN_GAP_MS = 1000; // never two automatic exchanges closer than this
  const DEFAULT_LIFETIME_S = 55; // neither expiresIn nor a JWT exp: what Sentifyd's plugin assumes
  const TICK_MS = 250;
  const MAX_LOG = 50;

  // ---------- helpers ----------

  function base64UrlJson(part) {
    let b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    b64 += "=".repeat((4 - (b64.length % 4)) % 4);
    const binary = atob(b64);
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  /** The payload of a JWT, read WITHOUT verification (display only), or null. */
  function jwtClaims(token) {
    if (typeof token !== "string") return null;
    const parts = token.split(".");
    if (parts.length !== 3 || !parts[1]) return null;
    try {
      const claims = base64UrlJson(parts[1]);
      return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
    } catch (_) {
      return null;
    }
  }

  /** Only http(s) links, resolved against the page; anything else (javascript:, data:) is dropped. */
  function safeHref(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      const url = new URL(value, window.location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  function clockTime(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
  }

  function truncate(value, n) {
    const s = String(value);
    return s.length > n ? `${s.slice(0, n)}…` : s;
  }

  const STATUS_LABEL = {
    loading: "Connecting",
    ready: "Ready",
    refreshing: "Refreshing",
    error: "Error",
  };

  // ---------- look ----------

  const STYLE = `
    :host {
      display: block;
      container-type: inline-size;
      font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
      color: #111827;
      --accent: var(--primary-color, #4f46e5);
      --accent-2: var(--secondary-color, #7c3aed);
      --muted: #6b7280;
      --border: #e5e7eb;
      --ok: #059669;
      --danger: #dc2626;
      --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
    }
    [hidden] { display: none !important; }
    * { box-sizing: border-box; }

    .wrap { display: grid; gap: 18px; }
    .top { display: grid; gap: 18px; grid-template-columns: 1fr; }
    @container (min-width: 640px) {
      .top { grid-template-columns: minmax(220px, 0.8fr) 1.4fr; }
    }

    /* avatar */
    .hero {
      display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 12px;
      padding: 26px 16px 22px; border-radius: 14px; text-align: center;
      background: radial-gradient(120% 90% at 50% 0%, #eef2ff 0%, #f5f3ff 45%, #fafafa 100%);
      border: 1px solid #e0e7ff;
    }
    .stage { position: relative; width: 132px; height: 132px; display: grid; place-items: center; }
    .halo {
      position: absolute; inset: 0; border-radius: 50%;
      background: radial-gradient(circle, rgba(79,70,229,0.20) 0%, rgba(79,70,229,0) 70%);
      animation: breathe 3.2s ease-in-out infinite;
    }
    .ring {
      position: absolute; inset: 6px; border-radius: 50%;
      border: 3px solid transparent; border-top-color: var(--accent); border-right-color: var(--accent);
      opacity: 0; transition: opacity .3s; animation: spin 0.9s linear infinite;
    }
    :host([data-status="loading"]) .ring, :host([data-status="refreshing"]) .ring { opacity: 1; }
    .face {
      position: relative; width: 104px; height: 104px; border-radius: 50%;
      background: linear-gradient(150deg, var(--accent) 0%, var(--accent-2) 100%);
      box-shadow: 0 14px 30px -10px rgba(79,70,229,0.55), inset 0 -8px 18px rgba(0,0,0,0.12),
        inset 0 6px 14px rgba(255,255,255,0.18);
      animation: bob 4s ease-in-out infinite;
      transition: filter .3s;
    }
    :host([data-status="error"]) .face { filter: grayscale(0.85) brightness(1.05); animation: none; }
    .eye {
      position: absolute; top: 38px; width: 12px; height: 15px; border-radius: 50%; background: #fff;
      animation: blink 4.5s infinite; transform-origin: center;
    }
    .eye.l { left: 31px; } .eye.r { right: 31px; }
    .mouth {
      position: absolute; left: 50%; top: 64px; width: 30px; height: 10px; margin-left: -15px;
      border-radius: 0 0 16px 16px; background: #fff; opacity: .95; transform-origin: top center;
    }
    :host([data-status="ready"]) .mouth { animation: talk 2.8s ease-in-out infinite; }
    :host([data-status="error"]) .mouth { height: 3px; top: 70px; border-radius: 3px; }
    .cheek { position: absolute; top: 60px; width: 12px; height: 7px; border-radius: 50%; background: rgba(255,255,255,0.18); }
    .cheek.l { left: 17px; } .cheek.r { right: 17px; }

    .name { font-size: 1.125rem; font-weight: 700; letter-spacing: -0.01em; }
    .avatar-id { font-size: 0.75rem; color: var(--muted); font-family: var(--mono); margin-top: 2px; word-break: break-all; }
    .pill {
      display: inline-flex; align-items: center; gap: 7px; padding: 4px 11px; border-radius: 999px;
      font-size: 0.8125rem; font-weight: 600; background: #fff; border: 1px solid var(--border); color: #374151;
    }
    .pill::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: #9ca3af; }
    :host([data-status="ready"]) .pill::before { background: var(--ok); box-shadow: 0 0 0 3px #d1fae5; }
    :host([data-status="loading"]) .pill::before,
    :host([data-status="refreshing"]) .pill::before { background: #f59e0b; animation: pulse 1s ease-in-out infinite; }
    :host([data-status="error"]) .pill { color: var(--danger); border-color: #fecaca; background: #fef2f2; }
    :host([data-status="error"]) .pill::before { background: var(--danger); }

    /* token panel */
    .panel {
      display: flex; flex-direction: column; gap: 16px; padding: 20px;
      border: 1px solid var(--border); border-radius: 14px; background: #fff; min-width: 0;
    }
    .label { font-size: 0.75rem; font-weight: 600; letter-spacing: .05em; text-transform: uppercase; color: var(--muted); }
    .count-row { display: flex; align-items: baseline; justify-content: space-between; gap: 12px; margin-top: 4px; }
    .count { font-size: 2.25rem; font-weight: 750; letter-spacing: -0.03em; font-variant-numeric: tabular-nums; line-height: 1.1; }
    .count-note { font-size: 0.8125rem; color: var(--muted); text-align: right; }
    .bar { height: 6px; border-radius: 999px; background: #eef2ff; overflow: hidden; margin-top: 10px; }
    .bar > span {
      display: block; height: 100%; width: 0%; border-radius: inherit;
      background: linear-gradient(90deg, var(--accent), var(--accent-2)); transition: width .25s linear;
    }
    .bar.low > span { background: linear-gradient(90deg, #f59e0b, #f97316); }

    dl.facts {
      display: grid; grid-template-columns: max-content 1fr; gap: 8px 16px; margin: 0;
      font-size: 0.875rem; padding-top: 14px; border-top: 1px solid #f3f4f6;
    }
    dl.facts dt { color: var(--muted); }
    dl.facts dd { margin: 0; font-family: var(--mono); font-size: 0.8125rem; min-width: 0; overflow-wrap: anywhere; }
    dl.facts dd .hint { font-family: inherit; color: var(--muted); }
    dl.facts dd.strong { font-family: inherit; font-size: 0.875rem; font-weight: 650; }

    .error {
      border: 1px solid #fecaca; background: #fef2f2; color: #7f1d1d; border-radius: 10px;
      padding: 12px 14px; font-size: 0.875rem; display: grid; gap: 4px;
    }
    .error .code { font-family: var(--mono); font-weight: 600; }
    .error a { color: #b91c1c; font-weight: 600; }
    .error .link-btn { color: #fff; margin-top: 6px; justify-self: start; }
    .error .link-btn:hover { filter: brightness(0.93); }

    .actions { display: flex; flex-wrap: wrap; gap: 8px; }
    button, .link-btn {
      -webkit-appearance: none; appearance: none; font: inherit; font-size: 0.875rem; font-weight: 600;
      min-height: 36px; padding: 0 14px; border-radius: 9px; cursor: pointer;
      border: 1px solid #d1d5db; background: #fff; color: #111827;
      display: inline-flex; align-items: center; text-decoration: none;
      transition: background-color .15s, border-color .15s;
    }
    button:hover { background: #f9fafb; border-color: #9ca3af; }
    button:disabled { opacity: .5; cursor: default; }
    button.primary, .link-btn { background: var(--accent); border-color: var(--accent); color: #fff; }
    button.primary:hover { filter: brightness(0.93); background: var(--accent); }
    :focus-visible { outline: 3px solid rgba(79,70,229,0.3); outline-offset: 2px; }

    /* exchange log */
    .log { border: 1px solid var(--border); border-radius: 14px; background: #fff; overflow: hidden; }
    .log-head {
      display: flex; flex-wrap: wrap; justify-content: space-between; align-items: center; gap: 4px 12px;
      padding: 12px 16px; border-bottom: 1px solid var(--border); background: #fafafb;
    }
    .log-head .label { margin: 0; }
    .log-head .meta { font-size: 0.75rem; color: var(--muted); font-family: var(--mono); overflow-wrap: anywhere; }
    .scroll { max-height: 232px; overflow: auto; }
    table { width: 100%; border-collapse: collapse; font-size: 0.8125rem; }
    th, td { text-align: left; padding: 8px 16px; border-bottom: 1px solid #f3f4f6; vertical-align: top; }
    th { font-weight: 600; color: var(--muted); font-size: 0.75rem; position: sticky; top: 0; background: #fff; }
    td.t, td.s { font-family: var(--mono); font-variant-numeric: tabular-nums; white-space: nowrap; }
    tr:last-child td { border-bottom: 0; }
    .kind { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 0.75rem; font-weight: 600; }
    .kind.initial { background: #eef2ff; color: #4338ca; }
    .kind.refresh { background: #ecfdf5; color: #047857; }
    td.ok { color: #047857; }
    td.bad { color: var(--danger); }
    .empty td { color: var(--muted); text-align: center; padding: 14px; }
    @container (max-width: 420px) {
      th, td { padding: 7px 10px; }
      .count { font-size: 1.9rem; }
    }

    @keyframes spin { to { transform: rotate(360deg); } }
    @keyframes breathe { 0%, 100% { transform: scale(0.92); opacity: .8; } 50% { transform: scale(1.06); opacity: 1; } }
    @keyframes bob { 0%, 100% { transform: translateY(0); } 50% { transform: translateY(-4px); } }
    @keyframes blink { 0%, 92%, 100% { transform: scaleY(1); } 95% { transform: scaleY(0.1); } }
    @keyframes talk {
      0%, 100% { transform: scaleY(1); } 10% { transform: scaleY(1.7); } 20% { transform: scaleY(0.6); }
      30% { transform: scaleY(1.4); } 40% { transform: scaleY(0.8); } 50% { transform: scaleY(1); }
    }
    @keyframes pulse { 50% { opacity: .35; } }
    @media (prefers-reduced-motion: reduce) { *, *::before { animation: none !important; transition: none !important; } }
  `;

  // Static markup only: every value from the network goes in through textContent.
  const MARKUP = `
    <div class="wrap" part="container">
      <div class="top">
        <div class="hero" part="avatar">
          <div class="stage" aria-hidden="true">
            <div class="halo"></div>
            <div class="ring"></div>
            <div class="face">
              <span class="eye l"></span><span class="eye r"></span>
              <span class="cheek l"></span><span class="cheek r"></span>
              <span class="mouth"></span>
            </div>
          </div>
          <div>
            <div class="name" id="name">Assistant</div>
            <div class="avatar-id" id="avatar-id"></div>
          </div>
          <span class="pill" id="status" role="status" aria-live="polite">Connecting</span>
        </div>

        <div class="panel" part="tokens">
          <div>
            <div class="label">Access token expires in</div>
            <div class="count-row">
              <div class="count" id="count">–:––</div>
              <div class="count-note" id="count-note">waiting for tokens</div>
            </div>
            <div class="bar" id="bar"><span></span></div>
          </div>
          <dl class="facts">
            <dt>sub</dt><dd id="sub">–</dd>
            <dt>exp</dt><dd id="exp">–</dd>
            <dt>jti</dt><dd id="jti">–</dd>
            <dt>Handle</dt><dd id="handle">–</dd>
            <dt>Refreshes</dt><dd id="refreshes" class="strong">0</dd>
          </dl>
          <div class="error" id="error" role="alert" hidden>
            <div><strong id="error-status"></strong> · <span class="code" id="error-code"></span></div>
            <div id="error-message"></div>
            <div id="signin-row" hidden><a id="signin" class="link-btn" href="#">Sign in again</a></div>
          </div>
          <div class="actions">
            <button type="button" class="primary" id="refresh-now">Refresh now</button>
            <button type="button" id="retry" hidden>Retry</button>
          </div>
        </div>
      </div>

      <div class="log" part="log">
        <div class="log-head">
          <span class="label">Token exchanges</span>
          <span class="meta" id="endpoint"></span>
        </div>
        <div class="scroll">
          <table>
            <thead><tr><th scope="col">Time</th><th scope="col">Kind</th><th scope="col">HTTP</th><th scope="col">Outcome</th></tr></thead>
            <tbody id="log"><tr class="empty"><td colspan="4">No exchange yet</td></tr></tbody>
          </table>
        </div>
      </div>
    </div>
  `;

  // ---------- the element ----------

  class SentifydBotStandIn extends HTMLElement {
    constructor() {
      super();
      this._root = this.attachShadow({ mode: "open" });
      this._built = false;
      this._started = false;
      this._timer = null;
      this._inflight = false;
      this._lastExchangeAt = 0;
      this._access = null;
      this._handle = null;
      this._claims = null;
      this._expiresAt = 0;
      this._lifetime = 0;
      this._refreshCount = 0;
      this._error = null; // {kind, status, error, message, login_url}
      this._shownSeconds = null;
    }

    get endpoint() {
      return this.getAttribute("token-endpoint") || this.getAttribute("token_endpoint") || "";
    }

    get avatarId() {
      return this.getAttribute("avatar-id") || this.getAttribute("avatar_id") || "";
    }

    get storageKey() {
      return `${TAG}:${this.avatarId}`;
    }

    connectedCallback() {
      if (!this._built) this._build();
      if (!this._timer) this._timer = window.setInterval(() => this._tick(), TICK_MS);
      if (!this._started) {
        this._started = true;
        this._setState("loading");
        this.setAttribute("data-refresh-count", "0");
        this.setAttribute("data-error", "");
        this.setAttribute("data-expires-in", "0");
        this._exchange("initial");
      }
    }

    disconnectedCallback() {
      if (this._timer) window.clearInterval(this._timer);
      this._timer = null;
    }

    /** Refresh now (the "Refresh now" button). Ignored while an exchange runs or after an error. */
    refreshNow() {
      if (this._inflight || this._error) return;
      this._exchange(this._handle ? "refresh" : "initial");
    }

    /**
     * Resume after an error (the "Retry" button). A refresh that the bridge answered with 429 or 5xx
     * did not rotate the handle, so it is retried with the same handle; after anything else
     * (401/403, no answer, a garbled answer) the component starts a new chain, as a reload would,
     * rather than replay a handle the bridge may already have rotated.
     */
    retry() {
      if (this._inflight || !this._error) return;
      const e = this._error;
      const sameHandle = e.kind === "refresh" && this._handle && (e.status === 429 || e.status >= 500);
      if (!sameHandle) this._handle = null;
      this._error = null;
      this._exchange(sameHandle ? "refresh" : "initial");
    }

    _build() {
      this._root.innerHTML = `<style>${STYLE}</style>${MARKUP}`;
      const $ = (id) => this._root.getElementById(id);
      this._el = {
        name: $("name"),
        avatarId: $("avatar-id"),
        status: $("status"),
        count: $("count"),
        countNote: $("count-note"),
        bar: $("bar"),
        sub: $("sub"),
        exp: $("exp"),
        jti: $("jti"),
        handle: $("handle"),
        refreshes: $("refreshes"),
        error: $("error"),
        errorStatus: $("error-status"),
        errorCode: $("error-code"),
        errorMessage: $("error-message"),
        signinRow: $("signin-row"),
        signin: $("signin"),
        refreshNow: $("refresh-now"),
        retry: $("retry"),
        endpoint: $("endpoint"),
        log: $("log"),
      };
      this._el.refreshNow.addEventListener("click", () => this.refreshNow());
      this._el.retry.addEventListener("click", () => this.retry());
      this._el.avatarId.textContent = this.avatarId || "(no avatar-id)";
      this._el.endpoint.textContent = this.endpoint ? `GET ${this.endpoint}` : "no token-endpoint";
      this._built = true;
    }

    _setState(status) {
      this.setAttribute("data-status", status);
      if (!this._el) return;
      this._el.status.textContent = STATUS_LABEL[status] || status;
      const busy = status === "loading" || status === "refreshing";
      this._el.refreshNow.disabled = busy || status === "error";
      this._el.retry.hidden = status !== "error";
      this._el.retry.disabled = busy;
    }

    async _exchange(kind) {
      if (this._inflight) return;
      const endpoint = this.endpoint;
      if (!endpoint) {
        this._fail(kind, 0, { error: "no_token_endpoint", message: "The element has no token-endpoint attribute." });
        return;
      }
      let url = endpoint;
      if (kind === "refresh") {
        url += `${endpoint.includes("?") ? "&" : "?"}refreshToken=${encodeURIComponent(this._handle)}`;
      }
      this._inflight = true;
      this._setState(kind === "refresh" ? "refreshing" : "loading");

      let response;
      let body = null;
      try {
        response = await fetch(url, { credentials: "same-origin" });
        const text = await response.text();
        try {
          body = text ? JSON.parse(text) : null;
        } catch (_) {
          body = null;
        }
      } catch (_) {
        this._inflight = false;
        this._lastExchangeAt = Date.now();
        this._fail(kind, 0, { error: "network_error", message: "The token endpoint could not be reached." });
        return;
      }
      this._inflight = false;
      this._lastExchangeAt = Date.now();

      if (!response.ok) {
        const err = body && typeof body === "object" ? body : {};
        this._fail(kind, response.status, {
          error: typeof err.error === "string" && err.error ? err.error : `http_${response.status}`,
          message: typeof err.message === "string" && err.message
            ? err.message
            : response.statusText || "The token endpoint refused the request.",
          login_url: typeof err.login_url === "string" ? err.login_url : null,
        });
        return;
      }
      const tokens = body && typeof body === "object" ? body.tokens : null;
      if (!tokens || typeof tokens.accessToken !== "string" || !tokens.accessToken) {
        this._fail(kind, response.status, {
          error: "bad_response",
          message: "The answer carries no tokens.accessToken.",
        });
        return;
      }
      this._accept(kind, response.status, tokens, body.avatarParameters);
    }

    _accept(kind, status, tokens, params) {
      const now = Date.now();
      this._access = tokens.accessToken;
      this._handle = typeof tokens.refreshToken === "string" && tokens.refreshToken ? tokens.refreshToken : null;
      this._claims = jwtClaims(this._access);

      const given = Number(tokens.expiresIn);
      let lifetime;
      let source;
      if (tokens.expiresIn !== undefined && tokens.expiresIn !== null && Number.isFinite(given)) {
        lifetime = given;
        source = "expiresIn";
      } else if (this._claims && Number.isFinite(Number(this._claims.exp))) {
        lifetime = Number(this._claims.exp) - now / 1000;
        source = "JWT exp";
      } else {
        lifetime = DEFAULT_LIFETIME_S;
        source = "default";
      }
      lifetime = Math.max(0, lifetime);
      this._lifetime = lifetime;
      this._expiresAt = now + lifetime * 1000;
      this._lifetimeSource = source;

      // Keep what was received, as the real component does.
      const parameters = params && typeof params === "object" ? params : {};
      try {
        window.sessionStorage.setItem(
          this.storageKey,
          JSON.stringify({ tokens, avatarParameters: parameters, receivedAt: new Date(now).toISOString() }),
        );
      } catch (_) {
        /* storage disabled: nothing to keep */
      }

      if (kind === "refresh") this._refreshCount += 1;
      this._error = null;
      this.setAttribute("data-refresh-count", String(this._refreshCount));
      this.setAttribute("data-error", "");
      this._setState("ready");

      const name = parameters.name || parameters.avatarName || parameters.displayName || parameters.title;
      this._el.name.textContent = typeof name === "string" && name ? name : "Assistant";
      this._renderTokens();
      this._el.error.hidden = true;
      const what = kind === "refresh" ? "handle rotated" : "new chain";
      this._log(kind, status, true, `ok · ${what} · ${Math.round(lifetime)} s`);
      this._shownSeconds = null;
      this._tick();
      this._emit(kind, status, true, "");
    }

    _fail(kind, status, err) {
      this._error = { kind, status, ...err };
      this.setAttribute("data-error", err.error);
      this._setState("error");
      const el = this._el;
      el.errorStatus.textContent = status ? `HTTP ${status}` : "No answer";
      el.errorCode.textContent = err.error;
      el.errorMessage.textContent = err.message || "";
      const href = err.error === "login_required" ? safeHref(err.login_url) : null;
      el.signinRow.hidden = !href;
      if (href) el.signin.href = href;
      else el.signin.removeAttribute("href");
      el.error.hidden = false;
      this._shownSeconds = null; // redraw the countdown note ("auto-refresh paused")
      this._tick();
      this._log(kind, status, false, err.error);
      this._emit(kind, status, false, err.error);
    }

    _emit(kind, status, ok, error) {
      this.dispatchEvent(
        new CustomEvent("sentifyd-standin:exchange", {
          bubbles: true,
          composed: true,
          detail: { kind, status, ok, error },
        }),
      );
    }

    _renderTokens() {
      const el = this._el;
      const c = this._claims;
      if (c) {
        el.sub.textContent = c.sub !== undefined ? String(c.sub) : "–";
        if (Number.isFinite(Number(c.exp))) {
          el.exp.textContent = "";
          el.exp.append(String(c.exp), " ");
          const hint = document.createElement("span");
          hint.className = "hint";
          hint.textContent = `(${clockTime(new Date(Number(c.exp) * 1000))})`;
          el.exp.append(hint);
        } else {
          el.exp.textContent = "–";
        }
        el.jti.textContent = c.jti !== undefined ? truncate(c.jti, 8) : "–";
      } else {
        const hint = document.createElement("span");
        hint.className = "hint";
        hint.textContent = "(opaque token, not a JWT)";
        el.sub.textContent = "";
        el.sub.append(hint);
        el.exp.textContent = "–";
        el.jti.textContent = "–";
      }
      el.handle.textContent = this._handle ? truncate(this._handle, 6) : "none";
      el.refreshes.textContent = String(this._refreshCount);
    }

    _tick() {
      if (!this._expiresAt) return;
      const now = Date.now();
      const remaining = (this._expiresAt - now) / 1000;
      const seconds = Math.max(0, Math.ceil(remaining));
      if (seconds !== this._shownSeconds) {
        this._shownSeconds = seconds;
        this.setAttribute("data-expires-in", String(seconds));
        const el = this._el;
        el.count.textContent = duration(seconds);
        const status = this.getAttribute("data-status");
        el.countNote.textContent =
          seconds === 0
            ? "expired"
            : status === "error"
              ? "auto-refresh paused"
              : `auto-refresh ${REFRESH_LEAD_S} s before expiry`;
        const pct = this._lifetime > 0 ? Math.min(100, (Math.max(0, remaining) / this._lifetime) * 100) : 0;
        el.bar.firstElementChild.style.width = `${pct.toFixed(1)}%`;
        el.bar.classList.toggle("low", remaining <= Math.max(REFRESH_LEAD_S, this._lifetime * 0.15));
      }
      if (
        this.getAttribute("data-status") === "ready" &&
        !this._inflight &&
        !this._error &&
        remaining <= REFRESH_LEAD_S &&
        now - this._lastExchangeAt >= MIN_GAP_MS
      ) {
        this._exchange(this._handle ? "refresh" : "initial");
      }
    }

    _log(kind, status, ok, outcome) {
      const body = this._el.log;
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      const row = document.createElement("tr");
      const cell = (cls, text) => {
        const td = document.createElement("td");
        if (cls) td.className = cls;
        if (text !== undefined) td.textContent = text;
        row.append(td);
        return td;
      };
      cell("t", clockTime(new Date()));
      const k = cell("");
      const tag = document.createElement("span");
      tag.className = `kind ${kind}`;
      tag.textContent = kind;
      k.append(tag);
      cell("s", status ? String(status) : "–");
      cell(ok ? "ok" : "bad", outcome);
      body.prepend(row);
      while (body.rows.length > MAX_LOG) body.deleteRow(body.rows.length - 1);
    }
  }

  customElements.define(TAG, SentifydBotStandIn);
})();
