/** The wallet: balances per account and the ledger history in words. */
const fmt = require('./format')

// How each ledger transaction kind (app/domain/ledger.py) reads in the wallet. `sign` is
// what it does to the money the resident owns (available + held): holds and releases
// only move money between available and held, so they show without a sign.
const TX_KIND = {
  topup: { title: '充值', sign: 1 },
  topup_reversal: { title: '充值撤销', sign: -1 },
  hold: { title: '充电预冻结', sign: 0 },
  capture: { title: '充电消费', sign: -1 },
  release: { title: '冻结退回', sign: 0 },
  refund: { title: '退款', sign: -1 },
  coin_sale: { title: '投币充电', sign: 0 },
}

const CHANNEL_TEXT = { wechat: '微信支付', alipay: '支付宝', cash: '现金', coin: '投币' }

function txRow(tx) {
  const kind = TX_KIND[tx.kind] || { title: tx.kind, sign: 0 }
  const amount = tx.amount_fen || 0
  let text = fmt.yuan(amount)
  if (kind.sign > 0) text = `+${text}`
  if (kind.sign < 0) text = `-${text}`
  return {
    id: tx.id,
    title: kind.title,
    channel: CHANNEL_TEXT[tx.channel] || '',
    amount: text,
    tone: kind.sign > 0 ? 'in' : kind.sign < 0 ? 'out' : 'neutral',
    when: fmt.dateTime(tx.created_at),
    memo: tx.memo || '',
  }
}

const ACCOUNT_STATUS_TEXT = { active: '正常', blocked: '已冻结', closed: '已注销' }
const CARD_STATUS_TEXT = { active: '正常', blocked: '已挂失' }

function accountRow(a) {
  const balance = a.balance || {}
  return {
    id: a.id,
    communityId: a.community_id,
    community: a.community_name || '',
    accountNo: fmt.maskNumber(a.account_no),
    holder: a.holder_name || '',
    status: a.status,
    statusText: ACCOUNT_STATUS_TEXT[a.status] || a.status,
    available: fmt.yuan(balance.available_fen),
    held: balance.held_fen ? fmt.yuan(balance.held_fen) : '',
    temporary: a.kind === 'temporary',
    locked: !!a.locked_until,
    cards: (a.cards || []).map((c) => ({ id: c.id, uid: maskCard(c.card_uid), status: c.status,
      statusText: CARD_STATUS_TEXT[c.status] || c.status })),
  }
}

function maskCard(uid) {
  const s = String(uid || '')
  return s.length > 4 ? `•••• ${s.slice(-4)}` : s
}

/** The sum of the available balances of the resident's own (not temporary) accounts. */
function totalAvailable(accounts) {
  return (accounts || []).filter((a) => a.kind !== 'temporary')
    .reduce((sum, a) => sum + ((a.balance && a.balance.available_fen) || 0), 0)
}

function amountOptions(amounts) {
  return (amounts || []).map((fen) => ({ fen, label: fen == null ? '不限' : `${fmt.yuan(fen)} 元`,
    short: fen == null ? '不限' : `${Math.floor(fen / 100)}${fen % 100 ? `.${fmt.pad(fen % 100)}` : ''}元` }))
}

module.exports = { TX_KIND, CHANNEL_TEXT, txRow, accountRow, totalAvailable, amountOptions,
  maskCard }
