// The console's one way to the server: the JSON API under /api/v1, a JWT per tab.
// Tokens live in sessionStorage (gone when the tab closes); a 401 "token_expired"
// trades the refresh token once, then asks for a new log-in.

const BASE = '/api/v1';
const KEY = 'evc.console.tokens';

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || 'http_error';
    this.details = (body && body.details) || {};
  }
}

export function tokens() {
  try { return JSON.parse(sessionStorage.getItem(KEY) || 'null'); } catch { return null; }
}

export function setTokens(t) {
  if (t) sessionStorage.setItem(KEY, JSON.stringify(t)); else sessionStorage.removeItem(KEY);
}

let refreshing = null;

async function refresh() {
  const t = tokens();
  if (!t || !t.refresh_token) return false;
  refreshing = refreshing || fetch(`${BASE}/auth/refresh`, {
    method: 'POST', headers: { Authorization: `Bearer ${t.refresh_token}` },
  }).then(async (r) => {
    if (!r.ok) { setTokens(null); return false; }
    setTokens(await r.json());
    return true;
  }).finally(() => { refreshing = null; });
  return refreshing;
}

function query(params) {
  const q = new URLSearchParams();
  Object.entries(params || {}).forEach(([k, v]) => {
    if (v !== undefined && v !== null && v !== '') q.append(k, v);
  });
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** fetch() with the JWT; resolves to parsed JSON (or a Response when raw), throws ApiError. */
export async function request(method, path, { body, params, raw = false, retried = false } = {}) {
  const t = tokens();
  const headers = {};
  if (t) headers.Authorization = `Bearer ${t.access_token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(BASE + path + query(params), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401 && !retried && t) {
    const err = await res.clone().json().catch(() => ({}));
    if (err.code === 'token_expired' && await refresh()) {
      return request(method, path, { body, params, raw, retried: true });
    }
    setTokens(null);
    window.dispatchEvent(new CustomEvent('evc:logged-out'));
    throw new ApiError(401, err);
  }
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => ({})));
  if (raw) return res;
  return res.status === 204 ? null : res.json();
}

export const get = (path, params) => request('GET', path, { params });
export const post = (path, body) => request('POST', path, { body: body || {} });
export const patch = (path, body) => request('PATCH', path, { body });
export const del = (path) => request('DELETE', path);

export async function login(username, password) {
  const res = await fetch(`${BASE}/auth/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, body);
  setTokens(body);
  return body;
}

export async function logout() {
  const t = tokens();
  if (t) {
    await request('POST', '/auth/logout', { body: { refresh_token: t.refresh_token } })
      .catch(() => null);
  }
  setTokens(null);
}

/** Download an export (CSV/XLSX) that needs the JWT: fetch it, then save it as a file. */
export async function download(path, params, filename) {
  const res = await request('GET', path, { params, raw: true });
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url; a.download = filename; document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** An image or SVG that needs the JWT, as an object URL for <img src>. */
export async function objectUrl(path) {
  const res = await request('GET', path, { raw: true });
  return URL.createObjectURL(await res.blob());
}

/**
 * Server-sent events: EventSource cannot send headers, so the API takes the token as
 * ?access_token=. Reopens with a fresh token when the stream ends or the token expires.
 */
export function events(path, params, handlers) {
  let source = null;
  let closed = false;
  const open = async () => {
    if (closed) return;
    const t = tokens();
    if (!t) return;
    source = new EventSource(BASE + path + query({ ...params, access_token: t.access_token }));
    Object.entries(handlers).forEach(([name, fn]) => {
      source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    });
    source.addEventListener('end', () => { source.close(); setTimeout(open, 100); });
    source.onerror = async () => {
      if (source.readyState === EventSource.CLOSED && !closed) {
        await refresh();
        setTimeout(open, 2000);
      }
    };
  };
  open();
  return () => { closed = true; if (source) source.close(); };
}
