// The pages' socket.io-client (node_modules, as served under /static/vendor) joins a conversation through the
// relay as the SDK does, says 'joined' once the avatar is shown, then prints the reason of its disconnect and
// whether socket.io-client tried to reconnect on its own (the SDK reconnects itself; two would race).
// Usage: node socket-goodbye.mjs URL TOKEN TRANSPORT
import console from 'node:console';
import process from 'node:process';
import { setTimeout } from 'node:timers';
import { io } from 'socket.io-client';

const [url, token, transport] = process.argv.slice(2);
const socket = io(url, {
  path: '/socket.io',
  transports: [transport],
  query: { client: token, flowId: 'demo', billed_client: '', debugMode: true, ks: '', stickyId: 's1', level: 'published' },
});
socket.on('onServerConnected', () => {
  socket.emit('isValidSession', { client: token, flowId: 'demo', room: 'r1' });
  socket.emit('join', { client: token, room: 'r1' });
});
socket.on('joinComplete', () => socket.emit('stvNewSession', { client: token, room: 'r1' }));
socket.on('showAgent', () => console.log('joined'));
socket.on('connect_error', (error) => {
  console.log(`connect_error ${error.message}`);
  process.exit(1);
});
socket.io.on('reconnect_attempt', () => console.log('reconnect_attempt'));
socket.on('disconnect', (reason) => {
  console.log(`disconnect ${reason}`);
  // Long enough for socket.io-client's first reconnect attempt (its delay starts at 1 s, +/- half).
  setTimeout(() => process.exit(0), 2000);
});
