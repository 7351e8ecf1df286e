// Shared UI of the hosted avatar pages: config, status line, error box, transcript panel.

const byId = (id) => document.getElementById(id);

export function readConfig() {
  return JSON.parse(byId('avatar-config').textContent);
}

export function setStatus(text) {
  byId('status').textContent = text;
}

export function showError(text) {
  const box = byId('error');
  box.textContent = text;
  box.hidden = false;
}

export function clearError() {
  const box = byId('error');
  box.textContent = '';
  box.hidden = true;
}

export function addTranscriptEntry(role, text, timestamp = new Date()) {
  if (!text) return;
  const item = document.createElement('li');
  item.className = role === 'User' ? 'entry user' : 'entry avatar';
  const who = document.createElement('span');
  who.className = 'role';
  who.textContent = role === 'User' ? 'You' : 'Avatar';
  const when = document.createElement('time');
  when.dateTime = timestamp.toISOString();
  when.textContent = timestamp.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const body = document.createElement('p');
  body.textContent = text;
  item.append(who, when, body);
  byId('transcript').append(item);
  byId('transcript-empty').hidden = true;
  item.scrollIntoView({ block: 'nearest' });
}

export function setConversationControls(active) {
  byId('start').disabled = active;
  byId('end').disabled = !active;
  for (const id of ['mute', 'text-input', 'send']) {
    const el = byId(id);
    if (el) el.disabled = !active;
  }
}

// One sentence per SDK error code (the SDK's own table), written for visitors.
const ERROR_MESSAGES = {
  1001: 'We cannot reach the avatar service. Check your connection and try again.',
  1002: 'The avatar service did not answer in time. Please try again.',
  1003: 'The connection to the avatar was lost. Reconnecting…',
  1004: 'The avatar could not join the conversation. Please try again.',
  1005: 'This avatar is not configured correctly. Please tell the site owner.',
  1006: 'The avatar service took too long to start the conversation. Retrying…',
  2001: 'Microphone access was denied. You can still type your messages below.',
  2002: 'No microphone is available. You can still type your messages below.',
  2003: 'The avatar video could not be started; continuing with audio only.',
  2004: 'The media connection failed. Please check your network and try again.',
  2005: 'The avatar video could not play. Click the page to allow playback.',
  3001: 'That action is not possible right now.',
  3003: 'This conversation has already been closed. Reload the page to start again.',
  4002: 'Your session has expired. Reload the page to start again.',
  4003: 'The time for this conversation is up. Thank you for talking with us.',
  5001: 'This page is not set up correctly (invalid configuration).',
  5002: 'This page is not set up correctly (the avatar container is missing).',
  5003: 'This page is not set up correctly (invalid page prompt).',
  6001: 'All avatars are busy right now. Please try again in a few minutes.',
  6002: 'This site has used up its avatar minutes. Please try again later.',
  6003: 'We waited too long for a free avatar. Please try again later.',
};

export function errorMessage(error) {
  const code = error && typeof error.code === 'number' ? error.code : null;
  return (code && ERROR_MESSAGES[code]) || (error && error.message) || 'Something went wrong.';
}

export function sdkMissingMessage() {
  return 'The avatar software could not be loaded. Check your connection or content blockers, then reload.';
}

// Draws a visitor state (visitor-state.js describe()) without rewriting what did not change, so the live
// regions announce each change once.
export function renderVisitor(view) {
  setText('status', view.status);
  const notices = byId('notices');
  const wanted = view.notices.join('\n');
  if (notices.dataset.shown !== wanted) {
    notices.replaceChildren(...view.notices.map((text) => {
      const item = document.createElement('li');
      item.textContent = text;
      return item;
    }));
    notices.dataset.shown = wanted;
    notices.hidden = view.notices.length === 0;
  }
  showOptional('remaining', view.remaining);
  showOptional('interim', view.interim ? `You: ${view.interim}` : '');
  byId('speaking').hidden = !view.speaking;
  if (view.error) showError(view.error); else clearError();
  byId('retry').hidden = !view.retry;
}

function setText(id, text) {
  const el = byId(id);
  if (el.textContent !== text) el.textContent = text;
}

function showOptional(id, text) {
  setText(id, text || '');
  byId(id).hidden = !text;
}
