// What both hosted pages do around their SDK: the transcript sender, the missing-SDK guard, Start, Retry and
// End, the visitor state (visitor-state.js) and how a call ends (final transcript flush, controls off).
import { clearError, renderVisitor, sdkMissingMessage, setConversationControls, showError } from './conversation-ui.js';
import { reportDiagnostic } from './diagnostics.js';
import { TranscriptSender } from './transcript-sender.js';
import { describe, initialState, reduce } from './visitor-state.js';

export const ENDED_MESSAGE = 'The conversation has ended. Thank you!';
const END_DELAY_MS = 1200; // lets the avatar's closing sentence finish playing before the call is closed
const CLOCK_MS = 1000; // the time-remaining line counts down
const UNDER_WAY = ['connecting', 'joining', 'queued', 'reconnecting', 'live']; // End can leave any of these

// createSdk() builds a fresh SDK for each Start or Retry (a failed one is destroyed: neither SDK can be
// started again from every failure); connect(sdk) starts the call.
// `typing`: the page has its own text box (the Iframe SDK's meeting may or may not offer one).
// `onFinish()`: the call ended, however (End, an end phrase, the service's end, a stop).
export function runPage({ config, createSdk, connect, typing = true, onFinish = () => {} }) {
  const byId = (id) => document.getElementById(id);
  const sdkLoaded = () => typeof window.KalturaAvatarSDK === 'function';
  const options = config.options || {};
  const recording = options.recordTranscript !== false;
  const transcript = new TranscriptSender(config.session.token);
  transcript.watchPageLifecycle();
  let sdk = null;
  let state = initialState({ audioOnly: options.audioOnly, typing,
    queueMaxWaitMs: config.sdk && config.sdk.queue ? config.sdk.queue.maxWaitMs : 0 });
  let clock = null;

  function render() {
    const view = describe(state, Date.now());
    renderVisitor(view);
    if (state.phase !== 'ended') setConversationControls(view.active);
    byId('start').disabled = state.phase !== 'idle';
    byId('end').disabled = !UNDER_WAY.includes(state.phase);
    const counting = view.remaining !== null;
    if (counting && !clock) clock = setInterval(render, CLOCK_MS);
    if (!counting && clock) { clearInterval(clock); clock = null; }
  }

  function dispatch(event, data) {
    state = reduce(state, event, data, Date.now());
    render();
    return state;
  }

  function discard() {
    const old = sdk;
    sdk = null;
    if (old) {
      try { old.destroy(); } catch { /* already destroyed */ }
    }
  }

  function finish(message) {
    onFinish();
    transcript.close(true);
    dispatch('ended');
    setConversationControls(false);
    byId('start').disabled = true;
    byId('end').disabled = true;
    if (message) byId('status').textContent = message;
  }

  function endSoon() {
    reportDiagnostic(config.session.token, 'end', 'end_phrase');
    setTimeout(() => {
      if (sdk) sdk.end();
      finish(ENDED_MESSAGE);
    }, END_DELAY_MS);
  }

  async function begin() {
    clearError();
    if (!sdkLoaded()) {
      showError(sdkMissingMessage());
      return;
    }
    discard();
    const placeholder = document.querySelector('#avatar-container .placeholder');
    if (placeholder) placeholder.hidden = true; // the avatar's video takes its place
    dispatch('start');
    sdk = createSdk();
    await connect(sdk);
  }

  byId('start').addEventListener('click', begin);
  byId('retry').addEventListener('click', begin);

  byId('end').addEventListener('click', () => {
    reportDiagnostic(config.session.token, 'end', 'visitor_ended');
    if (sdk) sdk.end();
    finish('You ended the conversation.');
  });

  if (!sdkLoaded()) {
    showError(sdkMissingMessage());
    byId('start').disabled = true;
  }
  window.avatarPage = { get sdk() { return sdk; }, get state() { return state; } };
  return {
    transcript,
    finish,
    endSoon,
    dispatch,
    discard,
    get state() { return state; },
    get sdk() { return sdk; },
    // A transcript line for the server, unless the flow keeps none (privacy); the entry, or null.
    record(role, text, when) { return recording ? transcript.add(role, text, when) : null; },
  };
}
