// The lab's HTTP API and the shared /slot-booking socket: every request the
// app makes goes through here, so a refusal always reaches the user with the
// server's own words (its `detail`).

const TOKEN_KEY = 'rerod.token';
const USER_KEY = 'rerod.user';

/** A refusal from the server: `detail` is shown to the user as it is. */
export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  token: localStorage.getItem(TOKEN_KEY),
  user: JSON.parse(localStorage.getItem(USER_KEY) || 'null'),
  save(token, user) {
    this.token = token;
    this.user = user;
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(USER_KEY, JSON.stringify(user));
    slotFeed.rejoin();
  },
  clear() {
    this.token = null;
    this.user = null;
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
    slotFeed.rejoin();
  },
  get isAdmin() {
    return this.user?.role === 'admin';
  },
};

/**
 * Calls the API. `body` is sent as JSON unless `raw` (a Blob or
 * ArrayBuffer) is given; the answer is parsed JSON, or an ApiError.
 */
export async function api(path, { method = 'GET', body, raw } = {}) {
  const headers = { Accept: 'application/json' };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  let payload;
  if (raw !== undefined) {
    headers['Content-Type'] = 'application/octet-stream';
    payload = raw;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch {
    throw new ApiError(0, 'The lab cannot be reached; check the network and try again.', 'network');
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    // An expired token, or an account an admin has disabled since, ends the
    // sign-in: the app says why on the sign-in page instead of failing page by page.
    if ((response.status === 401 || data.code === 'account_disabled') && session.token && !path.startsWith('/auth/')) {
      session.clear();
      window.dispatchEvent(new CustomEvent('signed-out', { detail: data.detail || 'Your sign-in has expired.' }));
    }
    throw new ApiError(response.status, data.detail || `${response.status} ${response.statusText}`, data.code);
  }
  return data;
}

/** A WebSocket URL on this host. */
export function socketUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

/**
 * The one /slot-booking socket: listeners get every `slots_update`; it
 * reconnects by itself (a second, then up to ten) and asks for the days
 * on view again once back. Signed in, it identifies as the account, so the
 * server can say at once when the account is disabled or signed out
 * (`signed_out`), and the app signs out there and then.
 */
export const slotFeed = {
  listeners: new Set(),
  views: new Map(),
  socket: null,
  retry: 1000,
  connect() {
    if (this.socket) return;
    const ws = new WebSocket(socketUrl('/slot-booking'));
    this.socket = ws;
    ws.addEventListener('open', () => {
      this.retry = 1000;
      if (session.token) ws.send(JSON.stringify({ type: 'identify', token: session.token }));
      for (const [device, date] of this.views.values()) this.ask(device, date);
    });
    ws.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === 'signed_out' && session.token) {
        session.clear();
        // The sign-in page says "You are signed out: " itself.
        window.dispatchEvent(new CustomEvent('signed-out', { detail: message.message.replace(/^You are signed out: /, '') }));
        return;
      }
      for (const listener of this.listeners) listener(message);
    });
    ws.addEventListener('close', () => {
      // A socket replaced on purpose (rejoin) leaves its successor alone.
      if (this.socket !== ws) return;
      this.socket = null;
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    });
  },
  /** Starts over under the account now signed in (or none): the old identity goes with the old socket. */
  rejoin() {
    const old = this.socket;
    if (!old) return;
    this.socket = null;
    old.close();
    this.connect();
  },
  ask(device, date) {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: 'get_slots', device, date }));
    }
  },
  /** Calls `listener` with every message until the returned function is called. */
  subscribe(listener) {
    this.listeners.add(listener);
    this.connect();
    return () => this.listeners.delete(listener);
  },
};
