// Session budgets and kill switches for the Iframe SDK's page: its meeting talks to the avatar service
// directly, so the page asks our server before it loads the meeting (admit), beats while it runs, and says
// when it ended. An answer with `go: false` carries the sentence the visitor reads.
const ENDPOINT = '/api/v1/page/budget';
const DEFAULT_BEAT_SECONDS = 10; // until the server says its own interval
const MIN_BEAT_MS = 500;
const MAX_BEAT_MS = 60_000;
const TOO_MANY = 'Too many attempts. Please wait a moment, then try again.';
const REFUSED = 'This conversation cannot start. Reload the page to try again.';

export function beatDelayMs(seconds) {
  const ms = Number(seconds) * 1000;
  if (!Number.isFinite(ms) || ms <= 0) return DEFAULT_BEAT_SECONDS * 1000;
  return Math.min(MAX_BEAT_MS, Math.max(MIN_BEAT_MS, ms));
}

// What an answer means for the page: { go, message, beatMs }. `asking` is 'admit' or 'beat'.
// Our server unreachable or failing (network error, 5xx: `status` 0 or more) lets the call start or go on:
// budgets fail open, as at the relay. A refusal of the request itself (a token no longer valid, a
// conversation that ended) stops it, with the server's message; too many questions delay a start only.
export function outcome(asking, status, body) {
  const answer = body && typeof body === 'object' ? body : {};
  const beatMs = beatDelayMs(answer.heartbeat_seconds);
  if (status >= 200 && status < 300) {
    const go = answer.go !== false;
    return { go, message: go ? null : String(answer.message || REFUSED), beatMs };
  }
  if (status === 429) return asking === 'admit' ? { go: false, message: TOO_MANY, beatMs } : { go: true, message: null, beatMs };
  if (status >= 400 && status < 500) return { go: false, message: String(answer.message || REFUSED), beatMs };
  return { go: true, message: null, beatMs };
}

export class PageBudget {
  // `post(body)` resolves to { status, body } (status 0: unreachable); `beacon(body)` sends without waiting.
  constructor(token, { post = postJson, beacon = sendBeacon } = {}) {
    this.token = token;
    this.post = post;
    this.beacon = beacon;
    this.timer = null;
    this.beatMs = DEFAULT_BEAT_SECONDS * 1000;
    this.running = false;
  }

  async ask(action) {
    const { status, body } = await this.post({ token: this.token, action });
    const result = outcome(action, status, body);
    this.beatMs = result.beatMs;
    return result;
  }

  admit() {
    return this.ask('admit');
  }

  // While the call runs: `beforeBeat()` (the transcript's flush: lines said before a stop are stored before
  // the server ends the conversation) then a beat, every beatMs; `onStop(message)` once, on a stop.
  run({ beforeBeat = async () => {}, onStop }) {
    this.halt();
    this.running = true;
    const next = () => {
      this.timer = setTimeout(async () => {
        this.timer = null;
        if (!this.running) return;
        try { await beforeBeat(); } catch { /* the beat matters more than the flush */ }
        if (!this.running) return;
        const result = await this.ask('beat');
        if (!this.running) return;
        if (result.go) next();
        else {
          this.running = false;
          onStop(result.message);
        }
      }, this.beatMs);
    };
    next();
  }

  halt() {
    this.running = false;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  // The call ended (or the page is going): the conversation's slot comes free now, not after its lease.
  end() {
    const wasRunning = this.running;
    this.halt();
    if (wasRunning) this.beacon({ token: this.token, action: 'end' });
  }
}

async function postJson(body) {
  try {
    const response = await fetch(ENDPOINT, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body) });
    let answer = null;
    try { answer = await response.json(); } catch { /* not JSON: the status says enough */ }
    return { status: response.status, body: answer };
  } catch {
    return { status: 0, body: null };
  }
}

function sendBeacon(body) {
  const blob = new Blob([JSON.stringify(body)], { type: 'application/json' });
  if (!navigator.sendBeacon(ENDPOINT, blob)) {
    fetch(ENDPOINT, { method: 'POST', keepalive: true, headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body) }).catch(() => { /* the lease lets the slot go */ });
  }
}
