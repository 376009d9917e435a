/**
 * The wallet: the balance of each bound charging account, WeChat Pay top-up
 * (wx.requestPayment with the server's parameters; the balance changes when the server
 * has WeChat's notification, so the order is polled until paid), links to each account's
 * history. API: GET /charging-accounts, POST /payments/wechat/orders,
 * GET /payments/orders/{out_trade_no}.
 */
const api = require('../../utils/api')
const config = require('../../utils/config')
const errors = require('../../utils/errors')
const fmt = require('../../utils/format')
const wallet = require('../../utils/wallet')
const wxp = require('../../utils/wxp')
const { waitUntil } = require('../../utils/poller')

Component({
  data: {
    loading: true,
    accounts: [],
    accountNames: [],
    accountIndex: 0,
    total: '0.00',
    amountOptions: wallet.amountOptions(config.topupAmountsFen),
    amountFen: config.topupAmountsFen[0],
    paying: false,
    notice: '',
    error: '',
  },

  methods: {
    onShow() {
      return this.load()
    },

    async load() {
      this.setData({ loading: true, error: '' })
      try {
        const raw = (await api.accounts()) || []
        const own = raw.filter((a) => a.kind !== 'temporary')
        const rows = own.map(wallet.accountRow)
        const index = Math.min(this.data.accountIndex, Math.max(rows.length - 1, 0))
        this.setData({
          accounts: rows,
          accountNames: rows.map((a) => `${a.community} ${a.accountNo}`),
          accountIndex: index,
          total: fmt.yuan(wallet.totalAvailable(own)),
        })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      } finally {
        this.setData({ loading: false })
      }
    },

    onPickAccount(e) {
      this.setData({ accountIndex: Number(e.detail.value) })
    },

    onPickAmount(e) {
      this.setData({ amountFen: e.detail.fen })
    },

    async onTopup() {
      const account = this.data.accounts[this.data.accountIndex]
      if (!account || this.data.paying) return null
      this.setData({ paying: true, error: '', notice: '' })
      try {
        const checkout = await api.wechatTopup(account.id, this.data.amountFen)
        try {
          await wxp.requestPayment(checkout.pay_params)
        } catch (err) {
          this.setData({ error: wxp.isCancel(err) ? '已取消支付' : '支付未完成，请重试' })
          return null
        }
        const no = checkout.order.out_trade_no
        const order = await waitUntil(() => api.order(no), (o) => o.status === 'paid',
          { tries: 10, interval: 1500 })
        if (order && order.status === 'paid') {
          wxp.toast(`已充值 ${fmt.yuan(order.amount_fen)} 元`, 'success')
        } else {
          this.setData({ notice: '支付结果确认中，余额稍后到账' })
        }
        await this.load()
        return order
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
        return null
      } finally {
        this.setData({ paying: false })
      }
    },

    onTransactions(e) {
      wx.navigateTo({ url: `/pages/transactions/transactions?account_id=${e.currentTarget.dataset.id}` })
    },

    onHistory() {
      wx.navigateTo({ url: '/pages/history/history' })
    },

    onAccounts() {
      wx.navigateTo({ url: '/pages/accounts/accounts' })
    },
  },
})
