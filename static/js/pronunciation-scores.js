// The Iframe SDK scores each spoken User line (0-100) but does not say whether the score comes before or
// after the line's transcription: a score goes on the User line just recorded if that line is still unsent,
// otherwise it waits for the next User line. Either way only within PAIRING_MS of its partner.

export const PAIRING_MS = 5000;

// The SDK sends either a bare number or { pronunciationScore }; anything else is not a score.
export function readScore(data) {
  const raw = typeof data === 'number' ? data : data && data.pronunciationScore;
  if (typeof raw !== 'number' || !Number.isFinite(raw)) return null;
  return Math.round(Math.min(100, Math.max(0, raw)));
}

export class ScorePairing {
  // isPending(entry) says whether a transcript entry can still change (it has not been sent yet).
  constructor(isPending, now = Date.now) {
    this.isPending = isPending;
    this.now = now;
    this.lastUser = null; // { entry, at }
    this.held = null; // { score, at }
  }

  line(role, entry) {
    if (role !== 'User' || !entry) return;
    const at = this.now();
    this.lastUser = { entry, at };
    if (this.held && at - this.held.at < PAIRING_MS) entry.pronunciation_score = this.held.score;
    this.held = null;
  }

  score(data) {
    const score = readScore(data);
    if (score === null) return;
    const at = this.now();
    const last = this.lastUser;
    if (last && at - last.at < PAIRING_MS && last.entry.pronunciation_score === undefined
        && this.isPending(last.entry)) {
      last.entry.pronunciation_score = score;
    } else {
      this.held = { score, at };
    }
  }
}
