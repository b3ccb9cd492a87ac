// The buyer's pages: forms post JSON to /api with fetch (same origin, session cookie), the order
// page counts down to expiresAt, polls its status and pays with Stripe.js. No inline scripts
// (the Content-Security-Policy forbids them): everything the page needs is in data-* attributes.
"use strict";

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    return { status: 0, body: { errors: [{ message: "The server cannot be reached. Try again.", field: null }] } };
  }
  const text = await response.text();
  let parsed = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch (err) {
    parsed = { errors: [{ message: "Unexpected answer from the server", field: null }] };
  }
  return { status: response.status, body: parsed };
}

// Only a path on this site: never an open redirect to another origin.
function safeNext(value) {
  return typeof value === "string" && /^\/(?![\/\\])/.test(value) ? value : "/";
}

function showErrors(form, errors) {
  form.querySelectorAll("[data-errors], [data-errors-for]").forEach((box) => (box.textContent = ""));
  (errors || []).forEach((err) => {
    const box =
      (err.field && form.querySelector(`[data-errors-for="${CSS.escape(err.field)}"]`)) ||
      form.querySelector("[data-errors]");
    if (box) {
      const line = document.createElement("p");
      line.textContent = err.message;
      box.appendChild(line);
    }
  });
}

function formBody(form) {
  const body = {};
  form.querySelectorAll("input[name]").forEach((input) => {
    const value = input.value.trim();
    // A price is sent as a JSON number; anything that is not one is sent as typed, for the API to refuse.
    body[input.name] = input.dataset.type === "number" && value !== "" && !isNaN(Number(value)) ? Number(value) : value;
  });
  return body;
}

// <form data-api="METHOD /api/path" data-next="/where/{id} | param | reload">
function wireApiForms() {
  document.querySelectorAll("form[data-api]").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const [method, path] = form.dataset.api.split(" ");
      const button = form.querySelector("button[type=submit]");
      if (button) button.disabled = true;
      const { status, body } = await api(method, path, method === "DELETE" ? undefined : formBody(form));
      if (button) button.disabled = false;
      if (status >= 400 || status === 0) {
        showErrors(form, body.errors || [{ message: "Something went wrong", field: null }]);
        return;
      }
      const next = form.dataset.next;
      if (next === "reload") window.location.reload();
      else if (next === "param") window.location.assign(safeNext(new URLSearchParams(location.search).get("next")));
      else window.location.assign(next.replace("{id}", encodeURIComponent(body.id)));
    });
  });
  const signout = document.getElementById("signout");
  if (signout) {
    signout.addEventListener("click", async () => {
      await api("POST", "/api/users/signout");
      window.location.assign("/");
    });
  }
}

// ── the order page ──────────────────────────────────────────────────────────────────────────
const FINAL = new Set(["complete", "cancelled"]);
const NOTES = {
  created: "Reserved for you until the countdown ends.",
  "awaiting:payment": "Waiting for your bank to confirm the payment.",
  complete: "Paid. The ticket is yours.",
  cancelled: "This order is cancelled; the ticket is free again.",
};

function orderPage(root) {
  const orderId = root.dataset.orderId;
  const expiresAt = Date.parse(root.dataset.expiresAt);
  // The server's clock decides expiry: correct the countdown for this browser's clock offset.
  const skew = Date.parse(root.dataset.now) - Date.now();
  const statusEl = document.getElementById("order-status");
  const noteEl = document.getElementById("order-note");
  const countdown = document.getElementById("countdown");
  const countdownValue = document.getElementById("countdown-value");
  const payment = document.getElementById("payment");
  let status = root.dataset.status;
  let paying = false;

  function render(next, note) {
    status = next;
    root.dataset.status = next;
    statusEl.textContent = next;
    statusEl.dataset.status = next;
    if (note !== undefined) noteEl.textContent = note;
    else if (!paying) noteEl.textContent = NOTES[next] || "";
    if (FINAL.has(next)) {
      countdown.hidden = true;
      payment.hidden = true;
    }
  }

  function tick() {
    if (FINAL.has(status)) return;
    const left = Math.max(0, Math.ceil((expiresAt - (Date.now() + skew)) / 1000));
    const minutes = Math.floor(left / 60);
    const seconds = String(left % 60).padStart(2, "0");
    countdownValue.textContent = `${minutes}:${seconds}`;
    if (left === 0) {
      countdownValue.textContent = "0:00";
      payment.hidden = true;
      noteEl.textContent = "Time is up: the order is being cancelled.";
    }
  }

  async function poll() {
    const { status: code, body } = await api("GET", `/api/orders/${encodeURIComponent(orderId)}`);
    if (code === 200 && body.status !== status) render(body.status);
    if (!FINAL.has(status)) setTimeout(poll, 1000);
  }

  render(status);
  tick();
  setInterval(tick, 250);
  setTimeout(poll, 1000);
  if (!payment.hidden)
    wirePayment(orderId, render, (value) => {
      paying = value;
      if (!value) render(status);
    });
}

function wirePayment(orderId, render, setPaying) {
  const form = document.getElementById("pay-form");
  const button = document.getElementById("pay");
  if (typeof window.Stripe !== "function" || !form.dataset.publishableKey) {
    showErrors(form, [{ message: "Payments are unavailable right now (Stripe.js is not set up).", field: null }]);
    button.disabled = true;
    return;
  }
  const stripe = window.Stripe(form.dataset.publishableKey);
  const card = stripe.elements().create("card");
  card.mount("#card-element");

  function fail(message) {
    setPaying(false);
    button.disabled = false;
    showErrors(form, [{ message, field: null }]);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showErrors(form, []);
    button.disabled = true;
    setPaying(true);
    // The card goes to Stripe; only the token (tok_…) comes to our API.
    const { token, error } = await stripe.createToken(card);
    if (error || !token) return fail((error && error.message) || "Check the card details.");
    const { status, body } = await api("POST", "/api/payments", { orderId, token: token.id });
    if (status === 201) {
      render("complete");
      return setPaying(false);
    }
    if (status === 202) {
      render("awaiting:payment", "Confirm the payment with your bank…");
      const result = await stripe.confirmCardPayment(body.clientSecret);
      const intent = result.paymentIntent;
      if (result.error || !intent || !["succeeded", "processing", "requires_capture"].includes(intent.status)) {
        const reason =
          (result.error && result.error.message) ||
          (intent && intent.last_payment_error && intent.last_payment_error.message) ||
          "The payment was not authenticated.";
        return fail(reason);
      }
      // Stripe tells our server by webhook; the status poll shows "complete" when it has.
      return render("awaiting:payment", "Authenticated. Waiting for Stripe's confirmation…");
    }
    fail((body.errors && body.errors[0] && body.errors[0].message) || "The payment failed.");
  });
}

wireApiForms();
const orderRoot = document.getElementById("order");
if (orderRoot) orderPage(orderRoot);
