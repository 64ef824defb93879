// Progressive enhancement only: every page works without this file.
document.addEventListener("DOMContentLoaded", () => {
  // Comment / Email tabs switch in place instead of reloading the task page.
  document.querySelectorAll("[data-tabs]").forEach((tabs) => {
    tabs.querySelectorAll("[data-tab]").forEach((tab) => {
      tab.addEventListener("click", (event) => {
        event.preventDefault();
        const name = tab.dataset.tab;
        tabs.querySelectorAll("[data-tab]").forEach((t) =>
          t.classList.toggle("active", t === tab));
        document.querySelectorAll("[data-panel]").forEach((panel) => {
          panel.hidden = panel.dataset.panel !== name;
        });
      });
    });
  });
});

// Email: "Add new" in the composer's From list opens the connect page.
document.addEventListener("DOMContentLoaded", () => {
  const from = document.getElementById("email-from");
  if (from) {
    from.addEventListener("change", () => {
      if (from.value === "add-new") window.location.href = from.dataset.addUrl;
    });
  }
  // Email: fill known server settings as soon as the address is typed.
  const form = document.getElementById("exchange-form");
  if (!form) return;
  const prefills = JSON.parse(form.dataset.prefill || "{}");
  const address = form.elements.namedItem("email");
  address.addEventListener("change", () => {
    const domain = address.value.split("@").pop().trim().toLowerCase();
    const settings = prefills[domain];
    if (!settings) return;
    Object.entries(settings).forEach(([name, value]) => {
      const input = form.elements.namedItem(name);
      if (input) input.value = value;
    });
  });
});

// Email: from a task, connect a mailbox in a popup and put it in the From list
// without reloading. Without a popup (blocked, no JavaScript, or no Sign in with
// Microsoft to offer) the composer posts "Add new", the server keeps the draft
// and the flow returns to the task.
document.addEventListener("DOMContentLoaded", () => {
  // The popup's pages remember that they run in the popup, across the sign-in.
  if (new URLSearchParams(window.location.search).get("popup") === "1") {
    sessionStorage.setItem("posta-popup", "1");
  }
  const inPopup = sessionStorage.getItem("posta-popup") === "1";
  const connected = document.getElementById("microsoft-connected");
  if (inPopup && (connected || document.getElementById("panel-email"))) {
    // Done (Microsoft), or a flow that ended on the task page (Exchange).
    const message = {
      type: "posta:account-connected",
      id: connected ? connected.dataset.accountId : null,
    };
    if (window.opener) {
      window.opener.postMessage(message, window.location.origin);
    } else {
      // A sign-in page may have cut the link to the opener; same origin still.
      new BroadcastChannel("posta-connect").postMessage(message);
    }
    window.close();
    return;
  }
  const panel = document.getElementById("panel-email");
  if (!panel) return;
  const openPopup = (element) => {
    if (element.dataset.popup !== "true") return null;
    const url = element.dataset.addUrl || element.href;
    const popupUrl = url + (url.includes("?") ? "&" : "?") + "popup=1";
    return window.open(popupUrl, "posta-connect", "popup,width=600,height=760");
  };
  const remember = (select) => {
    if (select && select.value !== "add-new") select.dataset.previous = select.value;
  };
  remember(document.getElementById("email-from"));
  // Capture phase: this runs before the From list's own "Add new" navigation.
  panel.addEventListener("change", (event) => {
    const from = event.target;
    if (from.id !== "email-from") return;
    if (from.value !== "add-new") return remember(from);
    event.stopPropagation();
    if (openPopup(from)) {
      from.value = from.dataset.previous || from.options[0].value;
    } else {
      from.form.submit();
    }
  }, true);
  panel.addEventListener("click", (event) => {
    const link = event.target.closest("#connect-email");
    if (link && openPopup(link)) event.preventDefault();
  });
  const refresh = (data) => {
    if (!data || data.type !== "posta:account-connected") return;
    fetch(window.location.href, { credentials: "same-origin" })
      .then((response) => response.text())
      .then((html) => {
        const doc = new DOMParser().parseFromString(html, "text/html");
        const fresh = doc.getElementById("email-from");
        const from = document.getElementById("email-from");
        if (!from) {
          // The first mailbox: swap in the composer the server now renders.
          const freshPanel = doc.getElementById("panel-email");
          if (freshPanel) panel.innerHTML = freshPanel.innerHTML;
          remember(document.getElementById("email-from"));
          return;
        }
        if (!fresh) return;
        const known = new Set(Array.from(from.options, (o) => o.value));
        const addNew = from.querySelector('option[value="add-new"]');
        let added = null;
        Array.from(fresh.options).forEach((option) => {
          if (known.has(option.value)) return;
          added = new Option(option.text, option.value);
          from.insertBefore(added, addNew);
        });
        const wanted = data.id && from.querySelector(`option[value="${data.id}"]`);
        if (wanted || added) from.value = (wanted || added).value;
        remember(from);
      });
  };
  window.addEventListener("message", (event) => {
    if (event.origin === window.location.origin) refresh(event.data);
  });
  new BroadcastChannel("posta-connect").onmessage = (event) => refresh(event.data);
});
