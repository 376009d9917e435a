/** Staff log in with username and password. API: POST /auth/login. */
const auth = require('../../../utils/auth')
const errors = require('../../../utils/errors')

Component({
  data: { username: '', password: '', busy: false, error: '' },

  methods: {
    onInput(e) {
      this.setData({ [e.currentTarget.dataset.field]: e.detail.value, error: '' })
    },

    async onSubmit() {
      const { username, password } = this.data
      if (!username.trim() || !password) {
        this.setData({ error: '请输入用户名和密码' })
        return false
      }
      this.setData({ busy: true, error: '' })
      try {
        await auth.staffLogin(username.trim(), password)
        wx.reLaunch({ url: '/pages/ops/index/index' })
        return true
      } catch (err) {
        let message = errors.userMessage(err)
        if (err.code === 'unauthenticated') message = '用户名或密码错误'
        if (!(err instanceof errors.ApiError)) message = '此账号不是物业或管理人员账号'
        this.setData({ error: message })
        return false
      } finally {
        this.setData({ busy: false })
      }
    },
  },
})
