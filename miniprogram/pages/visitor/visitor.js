/**
 * A visitor (no charging account) charges at the scanned port: choose an amount, or a
 * duration (priced with the community's tariff), pay with WeChat Pay, then the live page;
 * the receipt shows the refund of the unused part.
 * API: GET /public/ports/{code} (its `tariff` prices a duration); POST /visitor-charges →
 * 201 {session_id, status: "pending_payment", order: {out_trade_no, amount_fen, status},
 * pay_params} → wx.requestPayment(pay_params); GET /charging-sessions/{id} until the paid
 * session starts.
 */
const api = require('../../utils/api')
const auth = require('../../utils/auth')
const config = require('../../utils/config')
const errors = require('../../utils/errors')
const fmt = require('../../utils/format')
const qr = require('../../utils/qr')
const tariff = require('../../utils/tariff')
const wallet = require('../../utils/wallet')
const wxp = require('../../utils/wxp')
const { waitUntil } = require('../../utils/poller')

function hourOptions(hours) {
  return hours.map((h) => ({ fen: h, label: `${h} 小时` }))
}

Component({
  data: {
    code: '',
    port: null,
    tariffLines: [],
    byDuration: false,
    canUseDuration: false,
    amountOptions: wallet.amountOptions(config.visitorAmountsFen),
    hourOptions: hourOptions(config.visitorHours),
    amountFen: config.visitorAmountsFen[0],
    hours: null,
    payText: fmt.yuan(config.visitorAmountsFen[0]),
    paying: false,
    error: '',
  },

  methods: {
    async onLoad(query) {
      const code = qr.portCodeFromLaunch(query)
      if (!code) {
        this.setData({ error: '二维码无效，请重新扫描' })
        return
      }
      this.setData({ code })
      try {
        const port = await api.publicPort(code)
        this.rules = (port.tariff && port.tariff.rules) || null
        this.setData({
          port: { community: port.community_name, pile: port.pile_serial, number: port.number,
            online: !!port.pile_online, status: port.status },
          tariffLines: tariff.describe(this.rules),
          canUseDuration: !!this.rules,
        })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      }
    },

    onMode(e) {
      const byDuration = e.currentTarget.dataset.mode === 'duration' && this.data.canUseDuration
      this.setData({ byDuration })
      if (byDuration && this.data.hours == null) this.pickHours(config.visitorHours[0])
      if (!byDuration) this.setData({ payText: fmt.yuan(this.data.amountFen) })
    },

    onPickAmount(e) {
      this.setData({ amountFen: e.detail.fen, payText: fmt.yuan(e.detail.fen) })
    },

    onPickHours(e) {
      this.pickHours(e.detail.fen)
    },

    pickHours(hours) {
      const fen = tariff.prepayFor(this.rules, hours * 60)
      this.setData({ hours, payText: fen == null ? '--' : fmt.yuan(fen) })
      this.durationFen = fen
    },

    /** What is paid and the time limit sent with it. */
    choice() {
      if (this.data.byDuration) {
        return { amountFen: this.durationFen, maxMinutes: this.data.hours * 60 }
      }
      return { amountFen: this.data.amountFen, maxMinutes: null }
    },

    async onPay() {
      if (this.data.paying) return null
      const { amountFen, maxMinutes } = this.choice()
      if (!amountFen) {
        this.setData({ error: '请选择金额或时长' })
        return null
      }
      this.setData({ paying: true, error: '' })
      try {
        await auth.ensureLogin()
        const checkout = await api.visitorCharge(this.data.code, amountFen, maxMinutes)
        try {
          await wxp.requestPayment(checkout.pay_params)
        } catch (err) {
          this.setData({ error: wxp.isCancel(err) ? '已取消支付' : '支付未完成，请重试' })
          return null
        }
        wx.showLoading({ title: '正在启动…', mask: true })
        // the server starts the port when WeChat Pay tells it the order is paid
        const s = await waitUntil(() => api.session(checkout.session_id),
          (x) => x.status !== 'pending_payment', { tries: 30, interval: 1000 })
        wx.hideLoading()
        wx.redirectTo({ url: `/pages/charging/charging?session_id=${checkout.session_id}` })
        return s
      } catch (err) {
        wx.hideLoading()
        this.setData({ error: errors.userMessage(err) })
        return null
      } finally {
        this.setData({ paying: false })
      }
    },
  },
})
