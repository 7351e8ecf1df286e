// Hosted page for the Socket SDK: Socket.IO + WebRTC, text fallback, spoken commands, visitor states.
// The DPP never reaches this page: the relay injects it upstream (docs/protocol.md).
import { addTranscriptEntry, errorMessage, readConfig } from './conversation-ui.js';
import { reportSdkError } from './diagnostics.js';
import { ENDED_MESSAGE, runPage } from './page-lifecycle.js';
import { commandMatchers, peerNameFrom, relayRefusal } from './visitor-state.js';

const config = readConfig();
const $ = (id) => document.getElementById(id);
const page = runPage({ config, createSdk, connect });
const endMatchers = commandMatchers(config.commands);
let userMuted = false; // the visitor's own choice, which GenUI must not override
let fallbackTimer = null;
let attempts = 0; // reconnect attempts the SDK has made for this instance
// Audio over the socket (audio-only flows, or after video failed) gets as long as connecting does.
const AUDIO_TIMEOUT_MS = config.sdk.connectionTimeout || 15000;

function createSdk() {
  // Socket.IO and WHEP go to our own origin (the relay), so the CSP can say connect-src 'self'.
  const endpoints = { ...config.sdk.endpoints, socket: window.location.origin };
  const peerName = peerNameFrom(window.location.search, config.options && config.options.peerNameField);
  const avatar = new window.KalturaAvatarSDK({ ...config.sdk, peerName, endpoints, container: '#avatar-container' });
  for (const [name, url] of Object.entries(config.libraries || {})) avatar.setLibraryUrl(name, url);
  attempts = 0;
  userMuted = false;
  syncMuteButton(avatar);

  avatar.on('state-change', ({ to }) => {
    if (to === 'connecting') page.dispatch('connecting');
    if (to === 'joined') {
      page.dispatch('joined');
      if (page.state.fallback === 'waiting') watchAudio(avatar);
    }
  });
  avatar.on('ready', () => { clearTimeout(fallbackTimer); page.dispatch('ready'); });
  avatar.on('transcript-entry', (entry) => {
    const when = new Date(entry.timestamp);
    addTranscriptEntry(entry.role, entry.text, when);
    page.record(entry.role, entry.text, when);
  });
  for (const event of ['avatar-speaking-start', 'avatar-speaking-end', 'user-speech', 'mic-denied',
    'queue-started', 'queue-position-check', 'queue-timeout', 'time-warning']) {
    avatar.on(event, (data) => page.dispatch(event, data));
  }
  avatar.on('audio-fallback', () => {
    page.dispatch('audio-fallback');
    if (page.state.fallback === 'waiting') watchAudio(avatar);
  });
  avatar.on('reconnecting', (data) => { attempts = data.attempt; page.dispatch('reconnecting', data); });
  avatar.on('reconnected', () => page.dispatch('reconnected'));
  avatar.on('conversation-ended', () => { clearTimeout(fallbackTimer); page.finish(ENDED_MESSAGE); });
  avatar.on('error', (error) => {
    reportSdkError(config.session.token, error);
    onError(avatar, error);
  });
  avatar.on('genui', () => syncMuteButton(avatar)); // a pausing kind (a video) mutes the mic
  avatar.on('genui:hidden', () => {
    // The SDK unmutes when GenUI is dismissed, after this event: the visitor's mute comes back right after.
    setTimeout(() => {
      if (page.sdk !== avatar) return;
      if (userMuted && !avatar.isMicMuted()) avatar.muteMic();
      syncMuteButton(avatar);
    }, 0);
  });
  // One command per phrase or pattern: the SDK's onEndPhrase keeps only the last one it was given.
  endMatchers.forEach((matcher, index) => {
    avatar.registerCommand(`end-${index}`, matcher, () => page.endSoon());
  });
  return avatar;
}

// If the audio never comes up the SDK waits for good: after the time-out the visitor is told and can retry.
function watchAudio(avatar) {
  clearTimeout(fallbackTimer);
  fallbackTimer = setTimeout(() => {
    if (page.sdk === avatar && page.dispatch('audio-fallback-timeout').fallback === 'hung') page.discard();
  }, AUDIO_TIMEOUT_MS);
}

// No free avatar (queue off), the plan's minutes used up, the queue's limit reached: the SDK would go on
// reconnecting (into the queue again) behind a page that already gave the visitor the reason.
const CAPACITY_CODES = [6001, 6002, 6003];
const CONNECTION_LOST = 1003; // the SDK's ErrorCode.CONNECTION_LOST: a live connection dropped

function onError(avatar, error) {
  if (page.sdk !== avatar) return;
  const refusal = relayRefusal(error) || (CAPACITY_CODES.includes(error.code) ? errorMessage(error) : null);
  if (refusal) {
    // Our relay refused (ended, already open elsewhere, unknown page…) or no avatar is free: the SDK's own
    // retries cannot change that soon. It schedules them right after this event, so the instance goes on
    // the next tick.
    page.dispatch('refused', { message: refusal });
    setTimeout(() => { if (page.sdk === avatar) page.discard(); }, 0);
    return;
  }
  const sdk = config.sdk;
  const connecting = ['connecting', 'joining', 'queued', 'reconnecting'].includes(page.state.phase);
  const connectionFailure = connecting || error.code === CONNECTION_LOST;
  const willRetry = connectionFailure && sdk.autoReconnect !== false && error.code !== 6002
    && attempts < (sdk.maxReconnectAttempts || 5) && error.recoverable !== false;
  page.dispatch('error', { code: error.code, recoverable: error.recoverable, text: errorMessage(error), willRetry });
  if (error.code === CONNECTION_LOST && !willRetry) explainLostConnection(avatar);
}

// The SDK reconnects by default, and the relay's refusal then says why a conversation was stopped (a budget, a
// kill switch, an operator). With autoReconnect off nothing reconnects: the page asks the server instead.
async function explainLostConnection(avatar) {
  const answer = await page.transcript.status();
  if (answer && answer.message && page.sdk === avatar) {
    page.dispatch('refused', { message: answer.message });
    page.discard();
  }
}

async function connect(avatar) {
  try {
    await avatar.connect();
  } catch {
    // shown by the 'error' listener, which also knows whether the SDK tries again
  }
}

function syncMuteButton(avatar) {
  const muted = Boolean(avatar && avatar.isMicMuted());
  $('mute').setAttribute('aria-pressed', String(muted));
  $('mute').textContent = muted ? 'Unmute microphone' : 'Mute microphone';
}

// The SDK's caption button (and its C key) flips only the button; the captions follow once told, after the
// SDK's own handler has run (no reload needed).
function followCaptionToggle() {
  setTimeout(() => {
    const toggle = document.querySelector('#avatar-container .kav-captions__toggle');
    if (toggle && page.sdk) page.sdk.setCaptionsEnabled(toggle.getAttribute('aria-checked') === 'true');
  }, 0);
}
$('avatar-container').addEventListener('click', (event) => {
  if (event.target.closest('.kav-captions__toggle')) followCaptionToggle();
});
document.addEventListener('keydown', (event) => {
  const typing = event.target.closest && event.target.closest('input, textarea, [contenteditable]');
  if ((event.key === 'c' || event.key === 'C') && !typing) followCaptionToggle();
});

$('mute').addEventListener('click', () => {
  const sdk = page.sdk;
  if (!sdk) return;
  userMuted = !sdk.isMicMuted();
  if (userMuted) sdk.muteMic(); else sdk.unmuteMic();
  syncMuteButton(sdk);
});

$('text-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('text-input').value.trim();
  if (!text || !page.sdk) return;
  try {
    page.sdk.sendText(text);
    $('text-input').value = '';
  } catch (error) {
    page.dispatch('error', { code: error.code, recoverable: true, text: errorMessage(error), willRetry: false });
  }
});
