// Sends transcript lines to the server as they happen; on leave/end it flushes with sendBeacon.
// Every line carries a per-session seq, so retries are harmless: the server stores each seq once
// and answers with the highest contiguous seq it holds, and we resend only what follows.

const ENDPOINT = '/api/v1/page/transcript';
const BEACON_BUDGET = 32 * 1024; // browsers share ~64 KB across pending beacons
const FLUSH_DELAY_MS = 1000;
// Refusals that resending cannot change (ended, over the session's cap, a token refused): the sender stops
// sending lines. A rate limit (429) or a server error is worth trying again.
const FINAL_REFUSALS = new Set([400, 401, 403, 404, 409, 413]);
const encoder = new TextEncoder();
// The budget is in bytes: a string's length counts UTF-16 units, a third of the bytes of most CJK text.
const byteSize = (text) => encoder.encode(text).length;

export class TranscriptSender {
  constructor(token) {
    this.token = token;
    this.nextSeq = 1;
    this.pending = [];
    this.timer = null;
    this.closed = false;
    this.refused = false;
  }

  // Returns the queued entry: until it is sent, a late detail (a pronunciation score) can still be set on it.
  add(role, text, timestamp = new Date()) {
    if (!text || this.closed || this.refused) return null;
    const entry = { seq: this.nextSeq++, role, text, timestamp: timestamp.toISOString() };
    this.pending.push(entry);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush(), FLUSH_DELAY_MS);
    return entry;
  }

  isPending(entry) {
    return this.pending.includes(entry);
  }

  acknowledge(highestSeq) {
    this.pending = this.pending.filter((entry) => entry.seq > highestSeq);
  }

  // Posts `entries`; the server's answer once it is read (its lines acknowledged), else the response.
  async send(entries) {
    const response = await fetch(ENDPOINT, {
      method: 'POST', keepalive: true, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: this.token, entries }),
    });
    if (!response.ok) return { response, answer: null };
    const answer = await response.json();
    this.acknowledge(answer.highest_seq);
    return { response, answer };
  }

  async flush() {
    if (!this.pending.length) return;
    try {
      const { response } = await this.send(this.pending.slice(0, 200));
      if (!response.ok && FINAL_REFUSALS.has(response.status)) this.refuse();
    } catch { /* offline: kept for the next flush or the final beacon */ }
    if (this.pending.length) this.timer = setTimeout(() => this.flush(), FLUSH_DELAY_MS * 3);
  }

  // The server's answer about this conversation (sending what is pending, if anything): e.g. the sentence for a
  // conversation the server stopped (`message`); null when it cannot be had.
  async status() {
    try {
      return (await this.send(this.refused ? [] : this.pending.slice(0, 200))).answer;
    } catch {
      return null;
    }
  }

  // What is pending would be refused again: drop it, take no more lines; closing still sends the final beacon.
  refuse() {
    this.refused = true;
    this.pending = [];
  }

  // Final flush that survives the page going away: chunked so each beacon stays within budget.
  close(final = true) {
    if (this.closed) return;
    clearTimeout(this.timer);
    const chunks = [];
    let chunk = [];
    for (const entry of this.pending) {
      const candidate = [...chunk, entry];
      const sent = JSON.stringify({ token: this.token, entries: candidate, final: false }); // false: the longer flag
      if (chunk.length && byteSize(sent) > BEACON_BUDGET) {
        chunks.push(chunk);
        chunk = [entry];
      } else {
        chunk = candidate;
      }
    }
    chunks.push(chunk);
    chunks.forEach((entries, index) => {
      const last = index === chunks.length - 1;
      const body = JSON.stringify({ token: this.token, entries, final: final && last });
      navigator.sendBeacon(ENDPOINT, new Blob([body], { type: 'application/json' }));
    });
    if (final) this.closed = true;
  }

  watchPageLifecycle() {
    window.addEventListener('pagehide', () => this.close(true));
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'hidden' && this.pending.length) this.close(false);
    });
  }
}
