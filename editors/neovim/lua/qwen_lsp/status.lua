-- The server's qwenLsp/status notification, kept for statuslines and :QwenLspStatus.
local M = { state = 'starting', message = '', model = nil }

function M.handler(_, params)
  params = params or {}
  M.state, M.message, M.model = params.state or M.state, params.message or '', params.model
  vim.api.nvim_exec_autocmds('User', { pattern = 'QwenLspStatus', modeline = false })
end

--- A short string for a statusline, e.g. `qwen: ready`.
function M.line()
  return 'qwen: ' .. M.state
end

return M
