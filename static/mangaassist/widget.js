/* MangaAssist chat widget: one script tag on any store page, plain JavaScript, no build step.
 *
 *   <script src="https://store.example/static/mangaassist/widget.js"
 *           data-server="https://store.example" data-backend="simulated" defer></script>
 *
 *   data-server    the chat server (default: the origin this script was loaded from)
 *   data-backend   the server's LLM backend; "simulated" shows a "simulated answers" note
 *   page context   optional <script type="application/json" id="mangaassist-page"> (Django's json_script)
 *
 * It draws a launcher and a chat panel in a Shadow DOM (the page's CSS cannot reach in,
 * ours cannot leak out) and speaks the WebSocket protocol of DESIGN.md §4:
 * - each `delta` is painted the moment it arrives, through a streaming renderer for a
 *   safe Markdown subset (**bold**, numbered and bulleted lists, line breaks) that only
 *   ever creates elements and text nodes: model text is never parsed as HTML;
 * - a dropped socket is reopened with capped, jittered exponential backoff, and the
 *   answer in flight is `resume`d from the last delta painted; a reload restores the
 *   transcript (GET /chat/conversations/<uuid>/) and resumes the same way;
 * - the browser's first-token and total times go back as `client_metrics`.
 *
 * For hosts and tests: window.MangaAssist = {open(), close(), send(text), transcript()};
 * each answer element carries data-id and data-state (waiting, streaming, completed,
 * stopped, error); the host element #mangaassist-widget carries data-connection.
 */
(() => {
  "use strict";
  if (window.MangaAssist) return; // embedded twice: one widget

  const script = document.currentScript;
  const options = (script && script.dataset) || {};
  const scriptOrigin = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  const server = (options.server || scriptOrigin).replace(/\/+$/, "");
  const socketUrl = server.replace(/^http/, "ws") + "/ws/chat/";
  const simulated = options.backend === "simulated";

  const MAX_CHARS = 2000; // the server's CHAT_MAX_MESSAGE_CHARS
  const RECONNECT_BASE_MS = 500;
  const RECONNECT_CAP_MS = 15000;
  const SILENCE_LIMIT_MS = 20000; // an answer with no frame at all (keepalives included) this long: reconnect, resume
  const KEYS = {
    conversation: "mangaassist.conversation",
    pending: "mangaassist.pending", // the answer in flight, kept across a reload
    open: "mangaassist.open",
  };

  const saved = {
    get(key) {
      try { return JSON.parse(sessionStorage.getItem(key)); } catch (error) { return null; }
    },
    set(key, value) {
      try { sessionStorage.setItem(key, JSON.stringify(value)); } catch (error) { /* storage off: no resume */ }
    },
    remove(key) {
      try { sessionStorage.removeItem(key); } catch (error) { /* nothing to remove */ }
    },
  };

  /** An element with attributes and children; strings become text nodes, never markup. */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  // --- Streaming Markdown (the safe subset) ----------------------------------------------------

  const LIST_MARKER = /^(?:(\d{1,3})\.|([-*•])) $/;
  const MAYBE_LIST_MARKER = /^(?:\d{1,3}\.?|[-*•])$/;

  /** Append-only renderer: each pushed piece of text adds text nodes; nothing painted is rebuilt. */
  class MarkdownStream {
    constructor(root) {
      this.root = root;
      this.reset();
    }

    reset() {
      this.root.replaceChildren();
      this.list = null; // the open <ol>/<ul>
      this.paragraph = null; // the open <p>: a single newline continues it after a <br>
      this.block = null; // the <p> or <li> of the current line
      this.target = null; // where text goes: the block, or a <strong> in it
      this.textNode = null;
      this.bold = false;
      this.star = false; // a "*" waiting to see whether a second one follows
      this.atLineStart = true;
      this.prefix = ""; // the start of a line, until it is known whether it is a list marker
      this.blank = false; // a blank line was seen: the next text line starts a new paragraph
    }

    push(text) {
      for (const ch of text) this.char(ch);
    }

    finish() {
      if (this.atLineStart && this.prefix) this.flushPrefix();
      this.flushStar();
    }

    char(ch) {
      if (ch === "\r") return;
      if (ch === "\n") return this.endLine();
      if (!this.atLineStart) return this.inline(ch);
      if (!this.prefix && (ch === " " || ch === "\t")) return; // indentation is not kept
      this.prefix += ch;
      const marker = LIST_MARKER.exec(this.prefix);
      if (marker) return this.startItem(marker[1] ? "ol" : "ul", marker[1] ? Number(marker[1]) : 0);
      if (!MAYBE_LIST_MARKER.test(this.prefix)) this.flushPrefix();
    }

    flushPrefix() {
      const text = this.prefix;
      this.prefix = "";
      this.startParagraphLine();
      for (const ch of text) this.inline(ch);
    }

    endLine() {
      if (this.atLineStart && !this.prefix) {
        this.paragraph = null;
        this.blank = true;
        return;
      }
      if (this.atLineStart) this.flushPrefix();
      this.flushStar();
      this.bold = false;
      this.block = this.target = this.textNode = null;
      this.atLineStart = true;
    }

    startParagraphLine() {
      this.list = null; // a text line after a list ends it
      if (this.paragraph && !this.blank) this.paragraph.append(el("br"));
      else this.paragraph = this.root.appendChild(el("p"));
      this.openBlock(this.paragraph);
    }

    startItem(kind, number) {
      this.paragraph = null;
      if (!this.list || this.list.localName !== kind) {
        this.list = this.root.appendChild(el(kind, kind === "ol" && number !== 1 ? { start: number } : {}));
      }
      this.openBlock(this.list.appendChild(el("li", kind === "ol" ? { value: number } : {})));
    }

    openBlock(block) {
      this.block = this.target = block;
      this.textNode = null;
      this.atLineStart = this.blank = false;
      this.prefix = "";
    }

    inline(ch) {
      if (ch === "*") {
        if (!this.star) {
          this.star = true;
          return;
        }
        this.star = false;
        this.bold = !this.bold;
        this.target = this.textNode = null;
        return;
      }
      this.flushStar();
      this.write(ch);
    }

    flushStar() {
      if (!this.star) return;
      this.star = false;
      this.write("*");
    }

    write(text) {
      if (!this.target) this.target = this.bold ? this.block.appendChild(el("strong")) : this.block;
      if (this.textNode && this.textNode === this.target.lastChild) {
        this.textNode.appendData(text);
      } else {
        this.textNode = document.createTextNode(text);
        this.target.append(this.textNode);
      }
    }
  }

  // --- The shell -----------------------------------------------------------------------------

  const CSS = `
    :host { all: initial; }
    * { box-sizing: border-box; }
    .root { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "Hiragino Sans", "Noto Sans JP", sans-serif;
      color: #1d1d1f; }
    .sr-only { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; overflow: hidden;
      clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
    button { font: inherit; cursor: pointer; }
    :focus-visible { outline: 3px solid #1a73e8; outline-offset: 2px; }
    .launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; width: 58px; height: 58px;
      border: 0; border-radius: 50%; background: #b0174f; color: #fff; display: grid; place-items: center;
      box-shadow: 0 4px 16px rgba(0, 0, 0, .28); }
    .launcher svg { width: 28px; height: 28px; fill: currentColor; }
    .panel { position: fixed; right: 20px; bottom: 90px; z-index: 2147483001; display: flex; flex-direction: column;
      width: min(400px, calc(100vw - 40px)); height: min(640px, calc(100vh - 110px)); background: #fff;
      border-radius: 14px; box-shadow: 0 12px 40px rgba(0, 0, 0, .3); overflow: hidden; }
    .panel[hidden] { display: none; }
    header { display: flex; align-items: flex-start; gap: 8px; padding: 12px 10px 12px 16px; background: #b0174f;
      color: #fff; }
    h2 { margin: 0; font-size: 16px; line-height: 1.3; }
    .note { margin: 2px 0 0; font-size: 12px; }
    .close { margin-left: auto; flex: none; width: 36px; height: 36px; border: 0; border-radius: 8px;
      background: transparent; color: #fff; font-size: 24px; line-height: 1; }
    .close:hover { background: rgba(255, 255, 255, .15); }
    .status { margin: 0; padding: 6px 16px; font-size: 13px; background: #fff4d6; color: #5c4300; }
    .status:empty { display: none; }
    .log { flex: 1; overflow-y: auto; overscroll-behavior: contain; padding: 14px; display: flex;
      flex-direction: column; gap: 10px; background: #f7f7f8; }
    .hint { margin: auto 0; color: #5f5f66; text-align: center; font-size: 14px; }
    .msg { max-width: 88%; padding: 9px 12px; border-radius: 12px; overflow-wrap: anywhere; }
    .user { align-self: flex-end; background: #b0174f; color: #fff; white-space: pre-wrap; border-bottom-right-radius: 4px; }
    .assistant { align-self: flex-start; background: #fff; border: 1px solid #e3e3e8; border-bottom-left-radius: 4px; }
    .body p { margin: 0 0 .5em; }
    .body p:last-child { margin-bottom: 0; }
    .body ol, .body ul { margin: .3em 0 .5em; padding-left: 1.4em; }
    .body li { margin: .25em 0; }
    .tag { display: inline-block; margin-top: 6px; padding: 1px 7px; border-radius: 6px; background: #ececf0;
      color: #4a4a52; font-size: 12px; }
    .typing { display: inline-flex; gap: 4px; padding: 4px 0; }
    .typing i { width: 7px; height: 7px; border-radius: 50%; background: #8e8e96; animation: blink 1.2s infinite both; }
    .typing i:nth-child(3) { animation-delay: .2s; }
    .typing i:nth-child(4) { animation-delay: .4s; }
    @keyframes blink { 0%, 80%, 100% { opacity: .25; } 40% { opacity: 1; } }
    .error { align-self: stretch; max-width: 100%; background: #fdecea; color: #7d1a1a; border: 1px solid #f3c1bd; }
    .error p { margin: 0 0 6px; }
    .error button { border: 1px solid #b3261e; border-radius: 8px; background: #fff; color: #7d1a1a;
      padding: 4px 12px; min-height: 32px; }
    .error button:disabled { opacity: .6; cursor: default; }
    .cards { list-style: none; margin: 10px 0 0; padding: 0; display: grid; gap: 8px; }
    .card { display: flex; gap: 10px; padding: 8px; border: 1px solid #e3e3e8; border-radius: 10px;
      background: #fff; color: inherit; text-decoration: none; }
    .card:hover { border-color: #b0174f; }
    .cover { flex: none; width: 44px; height: 62px; border-radius: 4px; display: grid; place-items: center;
      color: #fff; font-weight: 700; font-size: 20px; }
    .info { display: flex; flex-direction: column; min-width: 0; font-size: 13px; }
    .title { font-weight: 600; font-size: 14px; color: #7a0f37; }
    .title-ja, .authors { color: #55555c; }
    .meta { display: flex; flex-wrap: wrap; gap: 4px 10px; margin-top: 2px; }
    .price { font-weight: 600; }
    .stock { color: #1b5e20; }
    .sold-out { color: #8a1c1c; }
    form { padding: 10px; border-top: 1px solid #e3e3e8; background: #fff; }
    textarea { display: block; width: 100%; min-height: 46px; max-height: 140px; resize: vertical; font: inherit;
      padding: 8px 10px; border: 1px solid #b9b9c0; border-radius: 10px; color: inherit; background: #fff; }
    textarea[aria-invalid="true"] { border-color: #c62828; }
    .row { display: flex; align-items: center; gap: 8px; margin-top: 6px; }
    .counter { margin-right: auto; font-size: 12px; color: #5f5f66; }
    .counter.over { color: #c62828; font-weight: 600; }
    .send, .stop { min-height: 36px; padding: 6px 16px; border-radius: 10px; }
    .send { border: 0; background: #b0174f; color: #fff; }
    .send:disabled { background: #d9a3b8; cursor: default; }
    .stop { border: 1px solid #8e8e96; background: #fff; color: #1d1d1f; }
    .stop[aria-disabled="true"] { opacity: .6; cursor: default; }
    @media (max-width: 480px) {
      .panel { inset: 0; width: 100%; height: 100%; border-radius: 0; }
      :host([data-open]) .launcher { display: none; }
      .msg { max-width: 94%; }
    }
    @media (prefers-reduced-motion: reduce) { .typing i { animation: none; opacity: .6; } }
  `;

  // A custom element (no page rule for `div` or `section` matches it), its inherited styles reset
  // inline with !important (beats the page's own !important rules on it); everything else lives
  // in the shadow root, where the page's selectors do not reach.
  const host = el("mangaassist-chat", { id: "mangaassist-widget", "data-connection": "idle" });
  host.style.setProperty("all", "initial", "important");
  const root = host.attachShadow({ mode: "open" });
  const ui = el("div", { class: "root" });
  root.append(el("style", { text: CSS }), ui);

  const svgNS = "http://www.w3.org/2000/svg";
  const icon = document.createElementNS(svgNS, "svg");
  icon.setAttribute("viewBox", "0 0 24 24");
  icon.setAttribute("aria-hidden", "true");
  const iconPath = document.createElementNS(svgNS, "path");
  iconPath.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z");
  icon.append(iconPath);

  const launcher = el("button", { class: "launcher", type: "button", "aria-label": "Open MangaAssist chat",
    "aria-expanded": "false", "aria-controls": "ma-panel" }, icon);
  const closeButton = el("button", { class: "close", type: "button", "aria-label": "Close chat" }, "×");
  const status = el("p", { class: "status", role: "status" });
  const log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Conversation", tabindex: "0" },
    el("p", { class: "hint", text: "Ask about a series, a volume, your order or a return." }));
  const input = el("textarea", { id: "ma-input", rows: "2", placeholder: "Ask about manga…",
    "aria-describedby": "ma-counter", autocomplete: "off", enterkeyhint: "send" });
  const counter = el("span", { id: "ma-counter", class: "counter", text: `0 / ${MAX_CHARS} characters` });
  const stopButton = el("button", { class: "stop", type: "button", hidden: true, "aria-label": "Stop generating" }, "Stop");
  const sendButton = el("button", { class: "send", type: "submit", disabled: true }, "Send");
  const form = el("form", {},
    el("label", { class: "sr-only", for: "ma-input", text: "Message MangaAssist (Enter sends, Shift+Enter adds a line)" }),
    input, el("div", { class: "row" }, counter, stopButton, sendButton));
  const panel = el("section", { class: "panel", id: "ma-panel", role: "dialog", "aria-labelledby": "ma-title", hidden: true },
    el("header", {},
      el("div", {},
        el("h2", { id: "ma-title", text: "MangaAssist" }),
        simulated ? el("p", { class: "note", text: "Simulated answers: written from the store's data by a test responder, not a language model." }) : null),
      closeButton),
    status, log, form);
  ui.append(launcher, panel);
  document.body.appendChild(host);

  // --- State -----------------------------------------------------------------------------------

  let socket = null;
  let connected = false;
  let attempts = 0;
  let reconnectTimer = 0;
  let conversation = saved.get(KEYS.conversation);
  let current = null; // the answer in flight: one at a time
  let lastFrameAt = 0;
  let stickToBottom = true;
  let scrollQueued = false;
  const entries = []; // the transcript as shown, for MangaAssist.transcript()

  function newId() {
    const random = window.crypto && crypto.getRandomValues ? crypto.getRandomValues(new Uint32Array(2)).join("") : String(Math.random()).slice(2);
    return "m" + Date.now().toString(36) + "-" + Number(random.slice(0, 15)).toString(36);
  }

  function setConnection(state) {
    host.dataset.connection = state;
  }

  function say(text) {
    status.textContent = text;
  }

  function scrollSoon() {
    if (!stickToBottom || scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(() => {
      scrollQueued = false;
      log.scrollTop = log.scrollHeight;
    });
  }
  log.addEventListener("scroll", () => {
    stickToBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  });

  function addToLog(node) {
    const hint = log.querySelector(".hint");
    if (hint) hint.remove();
    log.append(node);
    scrollSoon();
    return node;
  }

  function addUser(text) {
    addToLog(el("div", { class: "msg user" }, el("span", { class: "sr-only", text: "You: " }), text));
    entries.push({ role: "user", text });
  }

  /** An answer's bubble, with a typing indicator until its first words. */
  function addAnswer(id, question) {
    const typing = el("span", { class: "typing" }, el("span", { class: "sr-only", text: "MangaAssist is typing" }),
      el("i", { "aria-hidden": "true" }), el("i", { "aria-hidden": "true" }), el("i", { "aria-hidden": "true" }));
    const body = el("div", { class: "body" });
    const node = addToLog(el("div", { class: "msg assistant", "data-id": id, "data-state": "waiting", "aria-busy": "true" },
      el("span", { class: "sr-only", text: "MangaAssist: " }), typing, body));
    const answer = { role: "assistant", id, question, text: "", after: -1, state: "waiting", node, body, typing,
      renderer: new MarkdownStream(body), sentAt: null, firstTokenMs: null, totalMs: null, resumed: false,
      sent: false, acked: false, resent: false, stopRequested: false, repaired: false, finished: false, resyncing: false };
    entries.push(answer);
    return answer;
  }

  function setState(answer, state) {
    answer.state = state;
    answer.node.dataset.state = state;
    // While it streams, screen readers wait for the whole answer instead of reading each fragment.
    answer.node.setAttribute("aria-busy", state === "waiting" || state === "streaming" ? "true" : "false");
  }

  function tag(answer, text) {
    answer.node.append(el("span", { class: "tag", text }));
  }

  // --- Product cards -------------------------------------------------------------------------

  function safeUrl(url) {
    try {
      const parsed = new URL(String(url || ""), server + "/");
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch (error) {
      return null;
    }
  }

  function coverColor(key) {
    let hash = 0;
    for (const ch of String(key)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    return `hsl(${hash % 360} 55% 38%)`;
  }

  function productCard(product) {
    const title = String(product.title || product.title_ja || product.sku);
    const authors = Array.isArray(product.authors) ? product.authors.map(String) : [];
    const price = Number(product.price);
    const href = safeUrl(product.url);
    const card = el(href ? "a" : "div", { class: "card", href },
      el("span", { class: "cover", "aria-hidden": "true", style: `background:${coverColor(product.sku)}`, text: Array.from(title)[0] || "?" }),
      el("span", { class: "info" },
        el("span", { class: "title", text: title }),
        product.title_ja && product.title_ja !== title ? el("span", { class: "title-ja", lang: "ja", text: String(product.title_ja) }) : null,
        authors.length ? el("span", { class: "authors", text: authors.join(", ") }) : null,
        el("span", { class: "meta" },
          Number.isFinite(price) ? el("span", { class: "price", text: `¥${price.toLocaleString("en-US")} / vol` }) : null,
          el("span", { class: product.in_stock ? "stock" : "sold-out", text: product.in_stock ? "In stock" : "Out of stock" }))));
    return el("li", {}, card);
  }

  function renderProducts(answer, products) {
    const cards = (Array.isArray(products) ? products : []).filter((p) => p && typeof p === "object" && p.sku);
    if (!cards.length) return;
    const list = el("ul", { class: "cards", "aria-label": "Products in this answer" });
    for (const product of cards) list.append(productCard(product));
    answer.node.append(list);
    scrollSoon();
  }

  // --- The socket ----------------------------------------------------------------------------

  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  function pageContext() {
    const node = document.getElementById("mangaassist-page");
    if (!node) return {};
    try {
      const value = JSON.parse(node.textContent);
      return value && typeof value === "object" && !Array.isArray(value) ? value : {};
    } catch (error) {
      return {};
    }
  }

  function messageFrame(answer) {
    return { type: "message", id: answer.id, text: answer.question, page: pageContext() };
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (socket && socket.readyState <= WebSocket.OPEN) return; // connecting or open already
    setConnection(attempts ? "reconnecting" : "connecting");
    const url = socketUrl + (conversation ? "?conversation=" + encodeURIComponent(conversation) : "");
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (error) {
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.addEventListener("open", () => onOpen(ws));
    ws.addEventListener("message", (event) => { if (ws === socket) onFrame(event.data); });
    ws.addEventListener("close", () => { if (ws === socket) onClose(); });
  }

  /** Reconnect after a capped exponential delay with jitter (half fixed, half random). */
  function scheduleReconnect() {
    const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** attempts);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    attempts += 1;
    setConnection("reconnecting");
    say(current ? "Connection lost. Reconnecting… the answer will continue." : "Connection lost. Reconnecting…");
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, delay);
  }

  async function onOpen(ws) {
    await restored;
    if (ws !== socket || ws.readyState !== WebSocket.OPEN) return;
    const wasReconnecting = attempts > 0;
    connected = true;
    attempts = 0;
    lastFrameAt = performance.now();
    setConnection("connected");
    say(wasReconnecting ? "Reconnected." : "");
    if (wasReconnecting) setTimeout(() => { if (connected && status.textContent === "Reconnected.") say(""); }, 2500);
    const answer = current;
    if (answer && !answer.finished) {
      answer.resyncing = false;
      if (!answer.sent) {
        answer.sent = send(messageFrame(answer));
      } else {
        answer.resuming = true;
        // `chars` (in code points, as the server counts) places the seam if the browser is ahead of the log.
        send({ type: "resume", id: answer.id, after: answer.after, chars: [...answer.text].length });
      }
      if (answer.stopRequested) send({ type: "stop", id: answer.id });
    }
    updateControls();
  }

  function onClose() {
    connected = false;
    socket = null;
    updateControls();
    if (!panel.hidden || current) scheduleReconnect();
    else setConnection("idle"); // nothing to do until the customer comes back
  }

  function onFrame(data) {
    lastFrameAt = performance.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (error) {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "ack") onAck(frame);
    else if (frame.type === "delta") onDelta(frame);
    else if (frame.type === "completed") onCompleted(frame);
    else if (frame.type === "stopped") onStopped(frame);
    else if (frame.type === "error") onError(frame);
    // `keepalive`, `pong` and frame types added later: nothing to do (the silence watchdog saw them)
  }

  function answerFor(frame) {
    return current && !current.finished && frame.id === current.id ? current : null;
  }

  function onAck(frame) {
    if (typeof frame.conversation === "string" && frame.conversation !== conversation) {
      conversation = frame.conversation;
      saved.set(KEYS.conversation, conversation);
    }
    const answer = answerFor(frame);
    if (answer) answer.acked = true;
  }

  function onDelta(frame) {
    const answer = answerFor(frame);
    if (!answer || !Number.isInteger(frame.index) || typeof frame.text !== "string") return;
    if (frame.index <= answer.after) return; // painted already (a replay overlapping what we had)
    if (frame.index !== answer.after + 1) {
      // A gap: never paint out of order. Reconnect and resume from the last delta painted.
      if (!answer.resyncing && socket) {
        answer.resyncing = true;
        socket.close();
      }
      return;
    }
    const first = answer.after === -1;
    answer.after = frame.index;
    answer.text += frame.text;
    if (answer.state !== "streaming") {
      answer.typing.remove();
      setState(answer, "streaming");
    }
    answer.renderer.push(frame.text);
    if (first && answer.sentAt !== null) {
      const painted = () => {
        answer.firstTokenMs = Math.round((performance.now() - answer.sentAt) * 10) / 10;
        answer.node.dataset.firstTokenMs = String(answer.firstTokenMs);
      };
      if (document.hidden) painted();
      else requestAnimationFrame(painted);
    }
    scrollSoon();
  }

  function onCompleted(frame) {
    const answer = answerFor(frame);
    if (!answer) return;
    if (typeof frame.text === "string" && frame.text !== answer.text) {
      // What was streamed differs from the answer (e.g. replayed from the database): show the answer.
      answer.repaired = answer.after >= 0;
      answer.text = frame.text;
      answer.renderer.reset();
      answer.renderer.push(frame.text);
    }
    answer.renderer.finish();
    answer.typing.remove();
    renderProducts(answer, frame.products);
    finish(answer, "completed");
    if (answer.sentAt !== null && !answer.resumed) {
      const report = () => {
        answer.totalMs = Math.round((performance.now() - answer.sentAt) * 10) / 10;
        const metrics = { type: "client_metrics", id: answer.id, total_ms: answer.totalMs };
        if (answer.firstTokenMs !== null) metrics.first_token_ms = Math.min(answer.firstTokenMs, answer.totalMs);
        send(metrics);
      };
      if (document.hidden) report();
      else requestAnimationFrame(report); // after the first-token callback, once the answer is painted
    }
  }

  function onStopped(frame) {
    const answer = answerFor(frame);
    if (!answer) return;
    answer.renderer.finish();
    answer.typing.remove();
    finish(answer, "stopped");
    tag(answer, answer.text ? "Stopped" : "Stopped before the answer began");
  }

  function onError(frame) {
    if (frame.code === "conversation_not_found") {
      conversation = null;
      saved.remove(KEYS.conversation);
      say("Your earlier conversation has ended; a new one starts with your next message.");
      return;
    }
    const answer = answerFor(frame);
    if (!answer) {
      if (frame.id && entries.some((entry) => entry.id === frame.id)) return; // e.g. a stop that crossed its answer's end
      showError(frame, null);
      return;
    }
    if (answer.resuming && frame.code === "unknown_message" && !answer.resent && answer.question) {
      // The server never received the message (lost with the connection): send it again, same id.
      answer.resent = true;
      answer.resumed = false;
      send(messageFrame(answer));
      return;
    }
    answer.renderer.finish();
    answer.typing.remove();
    finish(answer, "error");
    if (!answer.text) { // nothing was said: the error takes the answer's place
      answer.node.remove();
      entries.splice(entries.indexOf(answer), 1);
    }
    showError(frame, answer.question);
  }

  function finish(answer, state) {
    answer.finished = true;
    answer.resuming = false;
    setState(answer, state);
    if (current === answer) current = null;
    saved.remove(KEYS.pending);
    const hadFocus = root.activeElement === stopButton;
    updateControls();
    if (hadFocus) input.focus(); // the Stop button is gone: focus must not fall to the page
    scrollSoon();
  }

  /** An error in the log, with the action that fixes it: retry (after a countdown when rate limited) or edit. */
  function showError(frame, question) {
    const code = String(frame.code || "internal");
    const box = addToLog(el("div", { class: "msg error", "data-code": code },
      el("p", { text: String(frame.message || "Something went wrong.") })));
    entries.push({ role: "error", id: frame.id || null, text: String(frame.message || ""), code });
    if (!question) return;
    if (code === "too_long") {
      const edit = el("button", { type: "button" }, "Edit message");
      edit.addEventListener("click", () => {
        box.remove();
        input.value = question;
        updateControls();
        input.focus();
      });
      box.append(edit);
      return;
    }
    const retry = el("button", { type: "button", "aria-live": "off" }, "Retry");
    retry.addEventListener("click", () => {
      if (current) return;
      box.remove();
      sendMessage(question, { echo: false });
      input.focus();
    });
    box.append(retry);
    const wait = Number(frame.retry_after);
    if (code === "rate_limited" && wait > 0) {
      const until = performance.now() + wait * 1000;
      retry.disabled = true;
      const tick = () => {
        const left = Math.ceil((until - performance.now()) / 1000);
        if (left > 0) {
          retry.textContent = `Retry in ${left} s`;
          setTimeout(tick, Math.min(1000, until - performance.now()));
        } else {
          retry.textContent = "Retry";
          retry.disabled = false;
        }
      };
      tick();
    }
  }

  // Silence watchdog: an answer in flight with no frame at all for too long is a dead socket.
  setInterval(() => {
    if (connected && current && !current.finished && socket && performance.now() - lastFrameAt > SILENCE_LIMIT_MS) {
      socket.close();
    }
  }, 2000);
  window.addEventListener("online", () => {
    if (!connected && (current || !panel.hidden)) {
      attempts = Math.min(attempts, 1);
      connect();
    }
  });
  // A reload mid-answer: keep what was painted, so the next page resumes right after it.
  window.addEventListener("pagehide", () => {
    if (current && !current.finished) {
      saved.set(KEYS.pending, { id: current.id, question: current.question, after: current.after, text: current.text,
        stop: current.stopRequested });
    }
  });

  // --- Sending, stopping, the controls --------------------------------------------------------

  function sendMessage(text, { echo = true } = {}) {
    if (current || !text) return false;
    if (echo) addUser(text);
    const answer = addAnswer(newId(), text);
    current = answer;
    answer.sentAt = performance.now();
    saved.set(KEYS.pending, { id: answer.id, question: text, after: -1, text: "" });
    if (connected) answer.sent = send(messageFrame(answer));
    else connect(); // sent once the socket opens
    updateControls();
    return true;
  }

  function stop() {
    const answer = current;
    if (!answer || answer.finished || answer.stopRequested) return;
    answer.stopRequested = true;
    send({ type: "stop", id: answer.id }); // or, while disconnected, right after the resume
    updateControls();
  }

  function characters(text) {
    return Array.from(text).length; // code points, as the server counts
  }

  function updateControls() {
    const length = characters(input.value);
    const over = length > MAX_CHARS;
    counter.textContent = over ? `${length} / ${MAX_CHARS} characters: ${length - MAX_CHARS} over the limit`
      : `${length} / ${MAX_CHARS} characters`;
    counter.classList.toggle("over", over);
    input.setAttribute("aria-invalid", over ? "true" : "false");
    sendButton.disabled = Boolean(current) || over || !input.value.trim();
    stopButton.hidden = !current;
    // aria-disabled, not disabled: a disabled button drops keyboard focus to the page.
    stopButton.setAttribute("aria-disabled", current && current.stopRequested ? "true" : "false");
    stopButton.textContent = current && current.stopRequested ? "Stopping…" : "Stop";
  }

  function submit() {
    const text = input.value.trim();
    if (!text || current) return;
    if (characters(text) > MAX_CHARS) {
      say(`Your message is over the ${MAX_CHARS}-character limit. Please shorten it.`);
      return;
    }
    if (sendMessage(text)) {
      input.value = "";
      updateControls();
      input.focus();
    }
  }

  function open({ focus = true } = {}) {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", "Close MangaAssist chat");
    host.dataset.open = "";
    saved.set(KEYS.open, true);
    connect();
    log.scrollTop = log.scrollHeight;
    if (focus) input.focus();
  }

  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", "Open MangaAssist chat");
    delete host.dataset.open;
    saved.set(KEYS.open, false);
    launcher.focus();
  }

  launcher.addEventListener("click", () => (panel.hidden ? open() : close()));
  launcher.addEventListener("pointerenter", () => { if (!socket) connect(); }); // open the socket before the click
  closeButton.addEventListener("click", close);
  stopButton.addEventListener("click", stop);
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !event.isComposing) { // Escape in an IME composition cancels the composition
      event.preventDefault();
      close();
    }
  });
  input.addEventListener("input", updateControls);
  input.addEventListener("keydown", (event) => {
    // Enter sends; Shift+Enter is a new line; Enter that confirms an IME composition (Japanese input) is not a send.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      submit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });

  // --- Restoring after a reload ----------------------------------------------------------------

  function renderSavedAnswer(turn) {
    const answer = addAnswer(String(turn.id), null);
    answer.typing.remove();
    answer.text = String(turn.text || "");
    answer.renderer.push(answer.text);
    answer.renderer.finish();
    answer.finished = true;
    if (turn.status === "complete") {
      setState(answer, "completed");
      renderProducts(answer, turn.products);
    } else {
      setState(answer, turn.status === "partial" ? "stopped" : "error");
      tag(answer, turn.status === "partial" ? "Interrupted" : "No answer");
    }
  }

  async function restore() {
    const pending = saved.get(KEYS.pending);
    let turns = [];
    if (conversation) {
      try {
        const response = await fetch(`${server}/chat/conversations/${encodeURIComponent(conversation)}/`,
          { credentials: "include", headers: { Accept: "application/json" } });
        if (response.ok) turns = (await response.json()).turns || [];
        else if (response.status === 404) {
          conversation = null;
          saved.remove(KEYS.conversation);
        }
      } catch (error) {
        // Offline: the socket will tell.
      }
    }
    const resuming = pending && typeof pending.id === "string" && typeof pending.question === "string" ? pending : null;
    for (const turn of turns) {
      if (resuming && turn.id === resuming.id && turn.role === "assistant") continue; // resumed below, with its cards
      if (turn.role === "user") addUser(String(turn.text || ""));
      else if (turn.role === "assistant") renderSavedAnswer(turn);
    }
    if (resuming) {
      if (!turns.some((turn) => turn.role === "user" && turn.id === resuming.id)) addUser(resuming.question);
      const answer = addAnswer(resuming.id, resuming.question);
      answer.resumed = true;
      answer.sent = true;
      answer.stopRequested = Boolean(resuming.stop);
      if (Number.isInteger(resuming.after) && resuming.after >= 0 && typeof resuming.text === "string") {
        answer.after = resuming.after;
        answer.text = resuming.text;
        answer.typing.remove();
        answer.renderer.push(resuming.text);
        setState(answer, "streaming");
      }
      current = answer;
    }
    updateControls();
  }

  const restored = restore();
  restored.then(() => {
    if (current || saved.get(KEYS.open)) {
      open({ focus: false }); // an answer to resume, or the panel was open: carry on where the page left off
      connect();
    }
  });

  window.MangaAssist = Object.freeze({
    open: () => open(),
    close,
    /** Send `text` as the customer would (the server checks it: too long is refused there too). */
    send: (text) => {
      if (panel.hidden) open({ focus: false });
      return sendMessage(String(text));
    },
    /** What the panel shows: [{role, id, text, state, ...}], `text` as streamed (the raw Markdown). */
    transcript: () => entries.map((entry) => ({
      role: entry.role, id: entry.id || null, text: entry.text, state: entry.state || null, code: entry.code || null,
      repaired: Boolean(entry.repaired), resumed: Boolean(entry.resumed), firstTokenMs: entry.firstTokenMs ?? null,
      totalMs: entry.totalMs ?? null,
    })),
  });
})();
