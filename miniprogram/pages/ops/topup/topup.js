/**
 * Cash handed in at the office, credited to a resident's account. Find the account by
 * number or name, type the amount in yuan (parsed to integer fen), confirm. The form keeps
 * one request_id until it succeeds, so a retry after a timeout credits once.
 * API: GET /charging-accounts?community_id, POST /charging-accounts/{id}/cash-topups.
 */
const api = require('../../../utils/api')
const errors = require('../../../utils/errors')
const fmt = require('../../../utils/format')
const ops = require('../../../utils/ops')
const wallet = require('../../../utils/wallet')
const wxp = require('../../../utils/wxp')

Component({
  data: {
    communityId: null, all: [], shown: [], query: '', selected: null, amountText: '', memo: '',
    busy: false, error: '', done: '',
  },

  methods: {
    async onLoad(query) {
      this.setData({ communityId: Number(query && query.community_id) })
      this.requestId = ops.requestId()
      try {
        const list = await api.accounts(this.data.communityId)
        const rows = list.filter((a) => a.status === 'active').map((a) => ({
          ...wallet.accountRow(a), fullNo: a.account_no || '' }))
        this.setData({ all: rows, shown: rows.slice(0, 50) })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      }
    },

    onSearch(e) {
      const q = String(e.detail.value || '').trim()
      const shown = this.data.all.filter((a) => !q || a.fullNo.includes(q) || a.holder.includes(q))
      this.setData({ query: q, shown: shown.slice(0, 50) })
    },

    onSelect(e) {
      const account = this.data.all.find((a) => a.id === Number(e.currentTarget.dataset.id))
      this.requestId = ops.requestId()
      this.setData({ selected: account || null, done: '', error: '' })
    },

    onInput(e) {
      this.setData({ [e.currentTarget.dataset.field]: e.detail.value, error: '' })
    },

    async onSubmit() {
      const account = this.data.selected
      const fen = fmt.parseYuan(this.data.amountText)
      if (!account) {
        this.setData({ error: '请先选择账户' })
        return null
      }
      if (!fen) {
        this.setData({ error: '请输入正确的金额（元，最多两位小数）' })
        return null
      }
      const ok = await wxp.confirm('确认现金充值',
        `向 ${account.holder || ''} ${account.accountNo} 充值 ${fmt.yuan(fen)} 元？`)
      if (!ok) return null
      this.setData({ busy: true, error: '' })
      try {
        const result = await api.cashTopup(account.id, fen, this.requestId, this.data.memo.trim())
        this.requestId = ops.requestId() // the next top-up is a new one
        this.setData({ done: `已充值 ${fmt.yuan(fen)} 元，当前可用余额 ${fmt.yuan(result.balance.available_fen)} 元`,
          amountText: '', memo: '' })
        return result
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
        return null
      } finally {
        this.setData({ busy: false })
      }
    },
  },
})
