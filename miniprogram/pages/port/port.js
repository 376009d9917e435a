/**
 * What a scanned port shows: where it is, its state, the tariff; then start charging with
 * one of the resident's accounts (and an optional spending limit), or charge as a visitor.
 * API: GET /public/ports/{code}, GET /charging-accounts, POST /charging-sessions.
 */
const api = require('../../utils/api')
const config = require('../../utils/config')
const errors = require('../../utils/errors')
const qr = require('../../utils/qr')
const tariff = require('../../utils/tariff')
const wallet = require('../../utils/wallet')
const ops = require('../../utils/ops')
const subscribe = require('../../utils/subscribe')

const STARTABLE = ['idle', 'plugged', 'full']

Component({
  data: {
    loading: true,
    code: '',
    port: null,
    tariffLines: [],
    tariffHeadline: '',
    accounts: [],
    accountNames: [],
    accountIndex: 0,
    limitOptions: wallet.amountOptions(config.chargeLimitsFen),
    limitFen: null,
    startable: false,
    starting: false,
    error: '',
  },

  methods: {
    onLoad(query) {
      const code = qr.portCodeFromLaunch(query)
      if (!code) {
        this.setData({ loading: false, error: '二维码无效，请重新扫描插座上的二维码' })
        return Promise.resolve()
      }
      this.setData({ code })
      return this.load()
    },

    /** Back from binding an account: the list may have changed. */
    onShow() {
      if (this.data.port && !this.data.loading) return this.loadAccounts()
      return Promise.resolve()
    },

    async load() {
      this.setData({ loading: true, error: '' })
      try {
        const port = await api.publicPort(this.data.code)
        const rules = port.tariff && port.tariff.rules
        this.setData({
          port: {
            id: port.port_id,
            number: port.number,
            status: port.status,
            statusText: port.pile_online ? (ops.PORT_STATUS_TEXT[port.status] || port.status)
              : '离线',
            online: !!port.pile_online,
            pile: port.pile_serial,
            communityId: port.community_id,
            community: port.community_name,
            building: port.building_name || '',
          },
          tariffLines: tariff.describe(rules),
          tariffHeadline: tariff.headline(rules),
          startable: !!port.pile_online && STARTABLE.includes(port.status),
        })
      } catch (err) {
        this.setData({ loading: false, error: errors.userMessage(err) })
        return
      }
      await this.loadAccounts()
    },

    async loadAccounts() {
      try {
        const all = await api.accounts()
        const usable = (all || []).filter((a) => a.status === 'active' && a.kind !== 'temporary')
          .map(wallet.accountRow)
        // accounts of this port's community first: the server refuses the others
        const here = this.data.port.communityId
        usable.sort((a, b) => (b.communityId === here) - (a.communityId === here))
        this.setData({
          accounts: usable,
          accountNames: usable.map((a) => `${a.community} ${a.accountNo}（余额 ${a.available} 元）`),
          accountIndex: 0,
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

    onPickLimit(e) {
      this.setData({ limitFen: e.detail.fen })
    },

    async onStart() {
      if (this.data.starting) return null
      const account = this.data.accounts[this.data.accountIndex]
      if (!account) {
        this.setData({ error: '请先绑定充电账户，或选择临时充电' })
        return null
      }
      this.setData({ starting: true, error: '' })
      await subscribe.askForChargeMessages()
      wx.showLoading({ title: '正在启动…', mask: true })
      try {
        const session = await api.startCharge(account.id, this.data.code, this.data.limitFen)
        wx.hideLoading()
        wx.redirectTo({ url: `/pages/charging/charging?session_id=${session.session_id}` })
        return session
      } catch (err) {
        wx.hideLoading()
        this.setData({ error: errors.userMessage(err) })
        return null
      } finally {
        this.setData({ starting: false })
      }
    },

    onVisitor() {
      wx.navigateTo({ url: `/pages/visitor/visitor?code=${this.data.code}` })
    },

    onBind() {
      const port = this.data.port
      if (!port) return
      wx.navigateTo({ url: `/pages/bind/bind?community_id=${port.communityId}`
        + `&community_name=${encodeURIComponent(port.community)}` })
    },
  },
})
