/* MangaAssist chat widget: one script tag on any store page.
 * <script src=".../static/mangaassist/widget.js" data-server="https://store.example" defer></script>
 * data-server: where the chat server is (empty: this page's origin).
 */
(() => {
  "use strict";
  const script = document.currentScript;
  const server = (script && script.dataset.server) || window.location.origin;
  const wsUrl = server.replace(/^http/, "ws") + "/ws/chat/";
  const storageKey = "mangaassist.conversation";

  function pageContext() {
    const node = document.getElementById("mangaassist-page");
    try { return node ? JSON.parse(node.textContent) : {}; } catch (e) { return {}; }
  }

  const host = document.createElement("div");
  host.id = "mangaassist-widget";
  const root = host.attachShadow({ mode: "open" });
  root.innerHTML = `
    <style>
      :host{all:initial}
      .panel{position:fixed;right:16px;bottom:16px;width:min(380px,calc(100vw - 32px));height:min(520px,calc(100vh - 32px));
        display:flex;flex-direction:column;background:#fff;border-radius:12px;box-shadow:0 8px 30px #0004;font:14px system-ui,sans-serif;color:#1d1d1f}
      .log{flex:1;overflow:auto;padding:12px;display:flex;flex-direction:column;gap:8px}
      .msg{padding:8px 10px;border-radius:10px;max-width:85%;white-space:pre-wrap;line-height:1.4}
      .user{align-self:flex-end;background:#1d6fe0;color:#fff}.assistant{align-self:flex-start;background:#f0f0f3}
      .error{align-self:stretch;background:#fde8e8;color:#8a1111}
      form{display:flex;gap:6px;padding:8px;border-top:1px solid #eee}
      textarea{flex:1;resize:none;font:inherit;padding:6px;border-radius:8px;border:1px solid #ccc}
      button{font:inherit;border:0;border-radius:8px;background:#1d6fe0;color:#fff;padding:0 12px;cursor:pointer}
    </style>
    <section class="panel" role="dialog" aria-label="MangaAssist chat">
      <div class="log" role="log" aria-live="polite"></div>
      <form><textarea rows="2" maxlength="2000" aria-label="Your message" placeholder="Ask about manga…"></textarea>
        <button type="submit">Send</button></form>
    </section>`;
  document.body.appendChild(host);
  const log = root.querySelector(".log");
  const form = root.querySelector("form");
  const input = root.querySelector("textarea");

  function bubble(kind, text) {
    const node = document.createElement("div");
    node.className = "msg " + kind;
    node.textContent = text;
    log.appendChild(node);
    log.scrollTop = log.scrollHeight;
    return node;
  }

  let socket = null;
  const answers = new Map();
  function connect() {
    const conversation = sessionStorage.getItem(storageKey);
    socket = new WebSocket(wsUrl + (conversation ? "?conversation=" + encodeURIComponent(conversation) : ""));
    socket.addEventListener("message", (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "ack") sessionStorage.setItem(storageKey, frame.conversation);
      else if (frame.type === "delta") {
        let node = answers.get(frame.id);
        if (!node) { node = bubble("assistant", ""); answers.set(frame.id, node); }
        node.textContent += frame.text;
      } else if (frame.type === "completed") {
        let node = answers.get(frame.id);
        if (!node) node = bubble("assistant", "");
        node.textContent = frame.text;
      } else if (frame.type === "error") bubble("error", frame.message);
    });
    socket.addEventListener("close", () => setTimeout(connect, 1000));
  }
  connect();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || socket.readyState !== WebSocket.OPEN) return;
    const id = "m" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    bubble("user", text);
    socket.send(JSON.stringify({ type: "message", id, text, page: pageContext() }));
    input.value = "";
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
})();
