// The console shell: log-in, the navigation each role gets, and a hash router
// (#/live, #/communities/3, ...). Each page is a module exporting render(root, ctx, params).

import * as api from './api.js';
import { h, mount, explain } from './ui.js';

const PAGES = {
  live: () => import('./pages/live.js'),
  communities: () => import('./pages/places.js'),
  community: () => import('./pages/places.js'),
  pile: () => import('./pages/places.js'),
  accounts: () => import('./pages/accounts.js'),
  account: () => import('./pages/accounts.js'),
  tariffs: () => import('./pages/tariffs.js'),
  incidents: () => import('./pages/incidents.js'),
  reports: () => import('./pages/reports.js'),
  loss: () => import('./pages/loss.js'),
  admin: () => import('./pages/admin.js'),
};

const STAFF = ['platform_admin', 'power_company', 'property_operator'];
const MANAGE = ['platform_admin', 'property_operator'];

const NAV = [
  ['live', '实时监控 Live', STAFF],
  ['communities', '小区与充电桩 Places', STAFF],
  ['accounts', '充电账户 Accounts', MANAGE],
  ['tariffs', '资费 Tariffs', STAFF],
  ['incidents', '告警 Incidents', STAFF],
  ['reports', '报表 Reports', STAFF],
  ['loss', '线损 Loss', STAFF],
  ['admin', '管理 Admin', ['platform_admin', 'power_company']],
];

const ctx = { me: null, cleanups: [] };

/** Pages register what to stop (SSE streams, timers) when the view changes. */
ctx.onLeave = (fn) => ctx.cleanups.push(fn);
ctx.can = (...roles) => ctx.me && roles.includes(ctx.me.role);
ctx.manages = () => ctx.can(...MANAGE);

function parseHash() {
  const [path, q] = (location.hash.replace(/^#\/?/, '') || 'live').split('?');
  const [page, id, sub] = path.split('/');
  return { page, id: id ? Number(id) : null, sub: sub || null, query: new URLSearchParams(q || '') };
}

function leave() {
  ctx.cleanups.splice(0).forEach((fn) => { try { fn(); } catch { /* already closed */ } });
}

function renderNav(active) {
  const nav = document.getElementById('nav');
  mount(nav, NAV.filter(([, , roles]) => ctx.can(...roles)).map(([page, label]) => h('a', {
    href: `#/${page}`, class: page === active || (active === 'community' && page === 'communities')
      || (active === 'pile' && page === 'communities') || (active === 'account' && page === 'accounts') ? 'active' : '',
  }, label)));
  mount(document.getElementById('who'),
    h('span.user', `${ctx.me.display_name || ctx.me.username} · ${ctx.me.role}`),
    h('button.link#logout', { onclick: async () => { await api.logout(); showLogin(); } }, '退出 Log out'));
}

function showLogin(message) {
  leave();
  ctx.me = null;
  mount(document.getElementById('nav'));
  mount(document.getElementById('who'));
  const err = h('p.error', message || '');
  const user = h('input#username', { name: 'username', autocomplete: 'username', required: true });
  const pass = h('input#password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const f = h('form.form.login', {
    onsubmit: async (e) => {
      e.preventDefault();
      err.textContent = '';
      try {
        await api.login(user.value.trim(), pass.value);
        ctx.me = await api.get('/auth/me');
        if (!STAFF.includes(ctx.me.role)) {
          await api.logout();
          err.textContent = 'This console is for platform, power-company and property staff; residents use the mini-program.';
          return;
        }
        route();
      } catch (e2) { err.textContent = explain(e2); }
    },
  }, h('h1', '登录 Log in'), h('label', h('span', 'User name'), user), h('label', h('span', 'Password'), pass),
  h('button#login', { type: 'submit' }, '登录 Log in'), err);
  mount(document.getElementById('view'), f);
  user.focus();
}

async function route() {
  leave();
  if (!api.tokens()) { showLogin(); return; }
  if (!ctx.me) {
    try { ctx.me = await api.get('/auth/me'); } catch { showLogin(); return; }
  }
  const params = parseHash();
  const load = PAGES[params.page] || PAGES.live;
  renderNav(params.page);
  const root = document.getElementById('view');
  mount(root, h('p.loading', 'Loading…'));
  try {
    const mod = await load();
    await mod.render(root, ctx, params);
  } catch (e) {
    if (e && e.status === 401) { showLogin('Your session has ended; please log in again.'); return; }
    mount(root, h('section.card', h('h2', 'Cannot show this page'), h('p.error', explain(e))));
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('evc:logged-out', () => showLogin('Your session has ended; please log in again.'));
route();
