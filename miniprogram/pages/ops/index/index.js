/**
 * Operators' home for one community (picker): today's revenue and energy, piles online /
 * offline, ports free / charging / faulty, live power, incidents not resolved; links to
 * piles, incidents, cash top-up, tariff.
 * API: GET /auth/me, GET /communities, GET /monitoring/overview?community_id,
 * GET /reports/daily?from&to&community_id (today, Beijing).
 */
const api = require('../../../utils/api')
const auth = require('../../../utils/auth')
const errors = require('../../../utils/errors')
const fmt = require('../../../utils/format')
const ops = require('../../../utils/ops')

const COMMUNITY_KEY = 'evc.ops.community'

Component({
  data: {
    role: '',
    canManage: false,
    communities: [],
    communityNames: [],
    communityIndex: 0,
    today: null,
    status: null,
    error: '',
  },

  methods: {
    async onShow() {
      if (auth.mode() !== 'staff' || !api.isLoggedIn()) {
        wx.redirectTo({ url: '/pages/ops/login/login' })
        return
      }
      await this.load()
    },

    async onPullDownRefresh() {
      await this.load()
      wx.stopPullDownRefresh()
    },

    async load() {
      try {
        const me = await api.me()
        const list = await api.communities()
        let saved = null
        try {
          saved = wx.getStorageSync(COMMUNITY_KEY)
        } catch (e) { /* none */ }
        const found = list.findIndex((c) => c.id === saved)
        this.setData({
          role: me.role,
          canManage: auth.canManage(me.role),
          communities: list.map((c) => ({ id: c.id, name: c.name })),
          communityNames: list.map((c) => c.name),
          communityIndex: found >= 0 ? found : 0,
          error: '',
        })
        await this.loadCommunity()
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      }
    },

    communityId() {
      const c = this.data.communities[this.data.communityIndex]
      return c ? c.id : null
    },

    async onPickCommunity(e) {
      this.setData({ communityIndex: Number(e.detail.value) })
      try {
        wx.setStorageSync(COMMUNITY_KEY, this.communityId())
      } catch (err) { /* ignore */ }
      await this.loadCommunity()
    },

    async loadCommunity() {
      const id = this.communityId()
      if (!id) return
      const day = fmt.beijingDay(Date.now())
      try {
        const [overview, report] = await Promise.all([api.overview(id),
          api.dailyReport(day, day, id)])
        const row = (overview.communities || []).find((c) => c.community_id === id)
        this.setData({ status: ops.overviewView(row), today: ops.todayView(report), error: '' })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      }
    },

    onOpen(e) {
      const id = this.communityId()
      if (!id) return
      const page = e.currentTarget.dataset.page
      wx.navigateTo({ url: `/pages/ops/${page}/${page}?community_id=${id}` })
    },

    async onLogout() {
      await auth.logout()
      wx.reLaunch({ url: '/pages/index/index' })
    },
  },
})
