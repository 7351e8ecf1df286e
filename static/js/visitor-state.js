// What the visitor is told, derived from the SDK's events: pure functions (no DOM, no timers) so that
// tests/js/visitor-state.test.js can check every state. conversation-ui.js draws the result.

// Socket.IO's own messages for a transport failure: anything else in a code-1001 error is the relay's reason.
const TRANSPORT_MESSAGES = ['xhr poll error', 'websocket error', 'timeout', 'server error', 'xhr post error',
  'transport close', 'transport error', 'parse error'];

const TEXT_ONLY = 'Your microphone is off or blocked, so this is a text conversation: type below and the avatar '
  + 'answers aloud. To talk instead, allow the microphone for this site and reload the page.';
// The Iframe SDK's meeting has no text box of ours: the page cannot promise typing.
const MIC_OFF = 'Your microphone is off or blocked, so the avatar cannot hear you. To talk, allow the microphone '
  + 'for this site and reload the page.';

export function initialState(options = {}) {
  return {
    phase: 'idle', // idle, connecting, queued, joining, live, reconnecting, failed, ended
    audioOnly: Boolean(options.audioOnly), // the flow's choice: no video at all
    typing: options.typing !== false, // the page has its own text box (socket pages)
    queueMaxWaitMs: options.queueMaxWaitMs || 0,
    fallback: null, // null, 'waiting' (video failed, audio not up yet), 'audio', 'hung'
    micDenied: false,
    speaking: false,
    interim: '',
    queue: null, // {attempt, waitedMs, nextCheckMs}
    reconnect: null, // {attempt, maxAttempts}
    endsAt: null, // ms timestamp from the SDK's time warning
    error: null, // text for the visitor
    retry: false, // the SDK will not try again by itself: offer Retry
  };
}

// A refusal from our relay (a Socket.IO connect refused with its reason) rather than a network failure.
export function relayRefusal(error) {
  if (!error || error.code !== 1001 || typeof error.message !== 'string') return null;
  const message = error.message.trim();
  if (!message || TRANSPORT_MESSAGES.includes(message.toLowerCase())) return null;
  return message;
}

export function reduce(state, event, data = {}, now = 0) {
  const next = { ...state };
  switch (event) {
    case 'start':
      return { ...initialState({ audioOnly: state.audioOnly, queueMaxWaitMs: state.queueMaxWaitMs,
        typing: state.typing }), phase: 'connecting' };
    case 'connecting':
      if (state.phase !== 'reconnecting') next.phase = 'connecting';
      next.error = null;
      return next;
    case 'joined':
      next.phase = 'joining';
      next.queue = null;
      if (state.audioOnly) next.fallback = 'waiting'; // audio over the socket from the start
      return next;
    case 'ready':
    case 'reconnected':
      return { ...next, phase: 'live', queue: null, reconnect: null, error: null, retry: false,
        fallback: state.fallback === 'waiting' ? 'audio' : state.fallback };
    case 'avatar-speaking-start':
      next.speaking = true;
      return next;
    case 'avatar-speaking-end':
      next.speaking = false;
      return next;
    case 'user-speech':
      next.interim = data.isFinal ? '' : String(data.text || '');
      return next;
    case 'audio-fallback':
      // Before the call is up the SDK now sets audio up over the socket; during it, video is simply gone.
      next.fallback = state.phase === 'live' ? 'audio' : 'waiting';
      return next;
    case 'audio-fallback-timeout':
      if (state.fallback !== 'waiting') return state;
      return { ...next, fallback: 'hung', phase: 'failed', retry: true,
        error: 'The avatar\'s audio connection could not be set up. Please try again.' };
    case 'queue-started':
      next.phase = 'queued';
      next.queue = { attempt: 0, waitedMs: 0, nextCheckMs: 0 };
      return next;
    case 'queue-position-check':
      next.phase = 'queued';
      next.queue = { attempt: data.attempt || 0, waitedMs: data.waitedMs || 0, nextCheckMs: data.nextCheckMs || 0 };
      return next;
    case 'queue-timeout':
      return { ...next, phase: 'failed', queue: null, retry: true,
        error: 'We waited too long for a free avatar. Please try again later.' };
    case 'reconnecting':
      return { ...next, phase: 'reconnecting', reconnect: { attempt: data.attempt, maxAttempts: data.maxAttempts },
        speaking: false, interim: '' };
    case 'time-warning':
      next.endsAt = now + Math.max(0, Number(data.remainingSeconds) || 0) * 1000;
      return next;
    case 'mic-denied':
      next.micDenied = true;
      return next;
    case 'refused':
      // The relay turned the connection away: retrying by itself cannot change that.
      return { ...next, phase: 'failed', retry: true, reconnect: null, queue: null, error: data.message };
    case 'error':
      return onError(next, data);
    case 'ended':
      return { ...next, phase: 'ended', speaking: false, interim: '', retry: false, queue: null, reconnect: null };
    default:
      return state;
  }
}

function onError(next, error) {
  // `willRetry`: the page knows whether the SDK schedules another attempt (auto reconnect, attempts left).
  if (error.willRetry) {
    next.error = null;
    if (error.code === 1003 && next.phase === 'live') {
      // Lost: the SDK waits out its first back-off before it says `reconnecting`; the call is not on meanwhile.
      return { ...next, phase: 'reconnecting', reconnect: null, speaking: false, interim: '' };
    }
    return next;
  }
  next.phase = next.phase === 'live' && error.recoverable !== false && error.code !== 1003 ? 'live' : 'failed';
  next.error = error.text || 'Something went wrong.';
  if (next.reconnect && next.reconnect.attempt >= next.reconnect.maxAttempts) {
    next.error = 'We could not reconnect to the avatar. Check your connection, then press Retry.';
    next.reconnect = { ...next.reconnect, exhausted: true };
  }
  next.retry = next.phase === 'failed';
  return next;
}

function minutes(ms) {
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const m = Math.floor(seconds / 60);
  const s = seconds % 60;
  return s ? `${m} min ${s} s` : `${m} min`;
}

// What the page shows for a state at time `now`: the status line, notices, and which controls are on.
export function describe(state, now = 0) {
  const notices = [];
  if (state.audioOnly) notices.push('Audio only: this avatar speaks without video.');
  else if (state.fallback) notices.push('Video unavailable — audio only.');
  if (state.micDenied) notices.push(state.typing ? TEXT_ONLY : MIC_OFF);
  let status;
  switch (state.phase) {
    case 'idle': status = 'Ready to start.'; break;
    case 'connecting': status = 'Connecting to the avatar…'; break;
    case 'joining': status = 'The avatar is getting ready…'; break;
    case 'queued': {
      const q = state.queue || { attempt: 0, waitedMs: 0, nextCheckMs: 0 };
      status = 'All avatars are busy: you are in the queue.';
      if (q.attempt) status += ` Waited ${minutes(q.waitedMs)}; checking again in ${minutes(q.nextCheckMs)}.`;
      if (state.queueMaxWaitMs) status += ` We give up after ${minutes(state.queueMaxWaitMs)}.`;
      break;
    }
    case 'live':
      if (!state.typing) status = 'In conversation.';
      else status = state.micDenied ? 'In conversation. Type below.' : 'In conversation. Speak, or type below.';
      break;
    case 'reconnecting': {
      const r = state.reconnect;
      status = r ? `Connection lost. Reconnecting (attempt ${r.attempt} of ${r.maxAttempts})…`
        : 'Connection lost. Reconnecting…';
      break;
    }
    case 'failed':
      status = state.reconnect && state.reconnect.exhausted ? 'Reconnecting failed.' : 'Not connected.';
      break;
    case 'ended': status = 'The conversation has ended. Thank you!'; break;
    default: status = '';
  }
  let remaining = null;
  if (state.endsAt !== null && state.phase === 'live') {
    const seconds = Math.max(0, Math.round((state.endsAt - now) / 1000));
    remaining = `Time remaining: ${minutes(seconds * 1000)}.`;
  }
  return {
    status,
    notices,
    remaining,
    error: state.error,
    retry: state.retry,
    speaking: state.phase === 'live' && state.speaking,
    interim: state.phase === 'live' ? state.interim : '',
    active: state.phase === 'live',
  };
}

// Spoken commands from the flow: a RegExp per pattern (validated on the server), a substring per phrase.
export function commandMatchers(commands) {
  const matchers = [];
  for (const command of commands || []) {
    if (command.action !== 'end') continue;
    if (command.pattern) {
      try {
        matchers.push(new RegExp(command.pattern, 'i'));
      } catch {
        // refused on import; an old row that slipped through is skipped rather than breaking the page
      }
    } else if (command.phrase) {
      matchers.push(command.phrase);
    }
  }
  return matchers;
}

export function matchesAny(matchers, text) {
  const lower = String(text || '').toLowerCase();
  return matchers.some((m) => (m instanceof RegExp ? m.test(text) : lower.includes(m.toLowerCase())));
}

// The SDK's `peerName` from a visitor field of the page's query string (the same values the DPP sees).
export function peerNameFrom(search, field, fallback = 'Visitor') {
  if (!field) return fallback;
  const value = new URLSearchParams(search).get(field);
  const printable = value ? [...value].filter((c) => c.charCodeAt(0) > 31 && c.charCodeAt(0) !== 127).join('') : '';
  const clean = printable.trim().slice(0, 60);
  return clean || fallback;
}
