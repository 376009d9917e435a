// Charging accounts (the keypad/IC-card wallets residents charge from).
//
//   #/accounts     the accounts of the user's communities (filter by community, search by
//                  phone number or name in the loaded list: the API has no search) and
//                  "new account"
//   #/account/ID   balance, edit (name, blocked), cash top-up and cash refund (each with an
//                  idempotency key, so a retried click counts once), PIN reset, IC cards
//                  (add, block/unblock, remove), the transaction history (reverse a
//                  mistaken cash top-up) and closing an empty account
//
// Endpoints: GET /communities, GET/POST /charging-accounts, GET/PATCH/DELETE
// /charging-accounts/{id}, GET .../balance, GET .../transactions (before_id paging),
// POST .../cash-topups, POST .../cash-refunds, POST .../pin-reset, GET/POST .../cards,
// PATCH/DELETE /cards/{id}, POST /ledger-transactions/{id}/reversal.
// Money is integer fen from the API and typed in yuan (parseYuan via form type 'yuan').

import * as api from '../api.js';
import { h, mount, act, table, form, section, stat, badge, yuan, when, toast } from '../ui.js';

const PAGE_SIZE = 50;

export async function render(root, ctx, params) {
  if (params.page === 'account') return accountPage(root, ctx, params.id);
  return accountsPage(root, ctx, params.query);
}

const rerender = () => window.dispatchEvent(new HashChangeEvent('hashchange'));

/** A fresh idempotency key (the API takes 8..64 of [A-Za-z0-9_-]). */
function requestId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `${prefix}-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

const inline = (f) => { f.classList.add('inline'); return f; };

const statusBadge = (status) => badge(status, { active: 'online', blocked: 'fault', closed: 'offline' }[status]);

// ------------------------------------------------------------------ #/accounts

async function accountsPage(root, ctx, query) {
  const community = query.get('community') || '';
  const [communities, accounts] = await Promise.all([
    api.get('/communities', { limit: 200 }),
    api.get('/charging-accounts', { community_id: community }),
  ]);
  const listBox = h('div#account-list');
  const search = h('input#account-search', { type: 'search', placeholder: '手机号或姓名 phone or name',
    value: query.get('q') || '' });
  const show = () => mount(listBox, accountsTable(filterAccounts(accounts, search.value)));
  search.addEventListener('input', show);
  show();

  mount(root,
    h('h1', '充电账户 Charging accounts'),
    section('账户 Accounts',
      h('div.form.inline.filters',
        h('label', h('span', '小区 Community'), communitySelect(communities, community)),
        h('label', h('span', '搜索 Search'), search)),
      listBox),
    ctx.manages() ? section('开户 New account', newAccountForm(communities, community)) : null);
}

function communitySelect(communities, selected) {
  const select = h('select#community-filter', {
    onchange: () => { location.hash = select.value ? `#/accounts?community=${select.value}` : '#/accounts'; },
  }, h('option', { value: '' }, '全部 All communities'),
  communities.map((c) => h('option', { value: c.id, selected: String(c.id) === selected }, c.name)));
  return select;
}

function filterAccounts(accounts, text) {
  const q = text.trim().toLowerCase();
  if (!q) return accounts;
  return accounts.filter((a) => a.account_no.includes(q) || (a.holder_name || '').toLowerCase().includes(q));
}

function accountsTable(accounts) {
  return table(accounts, [
    ['账号 Account (phone)', (a) => h('a', { href: `#/account/${a.id}` }, a.account_no)],
    ['姓名 Holder', (a) => a.holder_name || '—'],
    ['小区 Community', (a) => a.community_name],
    ['类型 Kind', (a) => a.kind],
    ['状态 Status', (a) => statusBadge(a.status)],
    ['可用余额 Available', (a) => yuan(a.balance.available_fen)],
    ['冻结 Held', (a) => yuan(a.balance.held_fen)],
    ['IC卡 Cards', (a) => a.cards.length],
  ], { empty: '没有账户 No accounts.', rowAttrs: (a) => ({ class: 'clickable', dataset: { account: a.id },
    onclick: (e) => { if (e.target.tagName !== 'A') location.hash = `#/account/${a.id}`; } }) });
}

function newAccountForm(communities, community) {
  return form([
    { name: 'community_id', label: '小区 Community', type: 'select', required: true, value: community,
      options: communities.map((c) => [c.id, c.name]) },
    { name: 'account_no', label: '手机号 Phone (account number)', required: true, placeholder: '13800000000' },
    { name: 'pin', label: '密码 PIN (6 digits)', type: 'password', required: true, autocomplete: 'new-password' },
    { name: 'holder_name', label: '姓名 Holder name' },
    { name: 'kind', label: '类型 Kind', type: 'select', value: 'resident',
      options: [['resident', '住户 resident'], ['temporary', '临时 temporary']] },
  ], async (v) => {
    const created = await act(() => api.post('/charging-accounts',
      { ...v, community_id: Number(v.community_id) }), '已开户 Account created');
    location.hash = `#/account/${created.id}`;
  }, { submit: '开户 Create', id: 'new-account-form' });
}

// ------------------------------------------------------------------ #/account/ID

async function accountPage(root, ctx, id) {
  const [account, balance, cards] = await Promise.all([
    api.get(`/charging-accounts/${id}`),
    api.get(`/charging-accounts/${id}/balance`),
    api.get(`/charging-accounts/${id}/cards`),
  ]);
  const balanceBox = h('div.stats#balance');
  const history = transactionsView(ctx, id);
  const showBalance = (b) => mount(balanceBox,
    stat('可用 available', h('span#balance-available', yuan(b.available_fen))),
    stat('冻结 held (charging)', h('span#balance-held', yuan(b.held_fen))),
    stat('合计 total', h('span#balance-total', yuan(b.total_fen))));
  const refresh = async () => {
    showBalance(await api.get(`/charging-accounts/${id}/balance`));
    await history.reload();
  };
  showBalance(balance);

  const manage = ctx.manages();
  mount(root,
    h('h1', h('a', { href: `#/accounts?community=${account.community_id}` }, '充电账户 Accounts'), ' / ',
      account.account_no, ' ', statusBadge(account.status)),
    h('div.row',
      section('余额 Balance', balanceBox, accountFacts(account)),
      manage ? section('修改 Edit', editAccountForm(account)) : null),
    manage ? h('div.row',
      section('现金充值 Cash top-up', topupForm(id, refresh)),
      section('现金退款 Cash refund', refundForm(id, refresh)),
      section('重置密码 Reset PIN', pinResetForm(id))) : null,
    section('IC卡 IC cards', cardsView(ctx, id, cards)),
    section('交易记录 Transactions', history.el),
    manage ? section('销户 Close account', closeAccount(account)) : null);
  await history.reload();
}

function accountFacts(a) {
  return h('table.facts', h('tbody', [
    ['小区 Community', h('a', { href: `#/community/${a.community_id}` }, a.community_name)],
    ['姓名 Holder', a.holder_name || '—'],
    ['类型 Kind', a.kind],
    ['密码锁定 PIN locked until', when(a.locked_until)],
  ].map(([k, v]) => h('tr', h('th', k), h('td', v)))));
}

function editAccountForm(a) {
  return form([
    { name: 'holder_name', label: '姓名 Holder name', value: a.holder_name },
    { name: 'status', label: '状态 Status', type: 'select', value: a.status,
      options: [['active', '正常 active'], ['blocked', '冻结 blocked']] },
  ], async (v) => {
    await act(() => api.patch(`/charging-accounts/${a.id}`, v), '已保存 Saved');
    rerender();
  }, { submit: '保存 Save', id: 'account-form' });
}

/** Cash paid at the office. One key per intended top-up: a retry reuses it, success renews it. */
function topupForm(id, refresh) {
  let key = requestId('cash');
  return form([
    { name: 'amount_fen', label: '金额 Amount (¥)', type: 'yuan', required: true, placeholder: '50.00' },
    { name: 'memo', label: '备注 Memo (receipt no.)' },
  ], async (v, el) => {
    const res = await act(() => api.post(`/charging-accounts/${id}/cash-topups`, { ...v, request_id: key }));
    toast(res.applied ? `已充值 Topped up ${yuan(v.amount_fen)}`
      : '此充值已记录 This top-up was already recorded (not credited twice)');
    key = requestId('cash');
    el.reset();
    await refresh();
  }, { submit: '充值 Top up', id: 'topup-form' });
}

function refundForm(id, refresh) {
  let key = requestId('cashrefund');
  return form([
    { name: 'amount_fen', label: '金额 Amount (¥)', type: 'yuan', required: true },
    { name: 'reason', label: '原因 Reason', required: true, placeholder: '搬走 moving out' },
  ], async (v, el) => {
    await act(() => api.post(`/charging-accounts/${id}/cash-refunds`, { ...v, request_id: key }),
      `已退款 Refunded ${yuan(v.amount_fen)} in cash`);
    key = requestId('cashrefund');
    el.reset();
    await refresh();
  }, { submit: '退款 Refund', id: 'cash-refund-form' });
}

function pinResetForm(id) {
  return form([
    { name: 'new_pin', label: '新密码 New PIN (6 digits)', type: 'password', required: true,
      autocomplete: 'new-password' },
  ], async (v, el) => {
    await act(() => api.post(`/charging-accounts/${id}/pin-reset`, v), '密码已重置 PIN reset');
    el.reset();
  }, { submit: '重置 Reset', id: 'pin-reset-form' });
}

// ------------------------------------------------------------------ cards

function cardsView(ctx, id, cards) {
  const columns = [
    ['卡号 Card UID', (c) => h('code', c.card_uid)],
    ['状态 Status', (c) => statusBadge(c.status)],
  ];
  if (ctx.manages()) columns.push(['', cardActions]);
  return [
    table(cards, columns, { empty: '没有IC卡 No IC cards.', rowAttrs: (c) => ({ dataset: { card: c.id } }) }),
    ctx.manages() ? h('div', { style: 'margin-top:12px' }, inline(form([
      { name: 'card_uid', label: '卡号 Card UID', required: true, placeholder: 'A1B2C3D4' },
    ], async (v) => {
      await act(() => api.post(`/charging-accounts/${id}/cards`, v), '已添加 Card added');
      rerender();
    }, { submit: '添加IC卡 Add card', id: 'card-form' }))) : null,
  ];
}

function cardActions(card) {
  const next = card.status === 'active' ? 'blocked' : 'active';
  const toggle = async () => {
    await act(() => api.patch(`/cards/${card.id}`, { status: next }),
      next === 'blocked' ? '已挂失 Card blocked' : '已解挂 Card unblocked').catch(() => null);
    rerender();
  };
  const remove = async () => {
    if (!window.confirm(`删除IC卡 Remove card ${card.card_uid}?`)) return;
    await act(() => api.del(`/cards/${card.id}`), '已删除 Card removed').catch(() => null);
    rerender();
  };
  return h('div.actions',
    h('button.secondary', { type: 'button', onclick: toggle },
      next === 'blocked' ? '挂失 Block' : '解挂 Unblock'),
    h('button.danger', { type: 'button', onclick: remove }, '删除 Remove'));
}

// ------------------------------------------------------------------ transactions

/** The history, newest first, with "older" paging by before_id. */
function transactionsView(ctx, id) {
  const el = h('div#transactions');
  let rows = [];
  const more = h('button.secondary', { type: 'button', onclick: () => load(rows.at(-1).id).catch(() => null) }, '更早 Older');
  const draw = (last) => {
    mount(el, transactionsTable(ctx, rows), last.length === PAGE_SIZE ? more : null);
  };
  async function load(beforeId) {
    const page = await act(() => api.get(`/charging-accounts/${id}/transactions`,
      { limit: PAGE_SIZE, before_id: beforeId }));
    rows = beforeId ? rows.concat(page) : page;
    draw(page);
  }
  return { el, reload: () => load().catch(() => null) };
}

const KIND_LABELS = {
  topup: '充值 top-up', topup_reversal: '冲正 reversal', hold: '冻结 hold', capture: '扣费 charge',
  release: '解冻 release', refund: '退款 refund', coin_sale: '投币 coins',
};

function transactionsTable(ctx, rows) {
  const columns = [
    ['#', (t) => t.id],
    ['时间 Time', (t) => when(t.created_at)],
    ['类型 Kind', (t) => KIND_LABELS[t.kind] || t.kind],
    ['渠道 Channel', (t) => t.channel || '—'],
    ['金额 Amount', (t) => yuan(t.amount_fen)],
    ['备注 Memo / reference', (t) => [t.memo, t.reference].filter(Boolean).join(' · ') || '—'],
  ];
  if (ctx.manages()) {
    columns.push(['', (t) => (t.kind === 'topup' && t.channel === 'cash' ? reverseButton(t) : '')]);
  }
  return table(rows, columns, { empty: '没有交易 No transactions yet.',
    rowAttrs: (t) => ({ dataset: { transaction: t.id, kind: t.kind } }) });
}

function reverseButton(t) {
  return h('button.secondary', { type: 'button', onclick: async () => {
    const reason = window.prompt(`冲正 Reverse the cash top-up of ${yuan(t.amount_fen)}? Reason:`, '');
    if (!reason) return;
    await act(() => api.post(`/ledger-transactions/${t.id}/reversal`, { reason }), '已冲正 Reversed')
      .catch(() => null);
    rerender();
  } }, '冲正 Reverse');
}

function closeAccount(a) {
  return h('div',
    h('p.muted', 'Only an account with a zero balance can be closed; its history stays.'),
    h('button.danger', { type: 'button', id: 'close-account', onclick: async () => {
      if (!window.confirm(`销户 Close account ${a.account_no}?`)) return;
      const closed = await act(() => api.del(`/charging-accounts/${a.id}`), '已销户 Account closed')
        .then(() => true, () => false);
      if (closed) location.hash = `#/accounts?community=${a.community_id}`;
    } }, '销户 Close account'));
}
