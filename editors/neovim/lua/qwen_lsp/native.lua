-- Ghost text on Neovim 0.12+: the built-in vim.lsp.inline_completion, plus word/line accept.
local partial = require('qwen_lsp.partial')

local M = {}
local ic = function() return vim.lsp.inline_completion end

function M.enable_for(_, client)
  vim.schedule(function()
    ic().enable(true, { client_id = client.id })
  end)
end

function M.accept()
  return ic().get()
end

local function accept_with(split)
  return ic().get({
    on_accept = function(item)
      local text = type(item.insert_text) == 'string' and item.insert_text or tostring(item.insert_text.value)
      local rest = text
      if item.range then
        rest = partial.untyped(text, item.range.start.row, item.range.start.col)
      end
      if rest and rest ~= '' then
        partial.insert_at_cursor(split(rest))
      end
    end,
  })
end

function M.accept_word() return accept_with(partial.next_word) end
function M.accept_line() return accept_with(partial.next_line) end

function M.cycle(step)
  ic().select({ count = step })
end

--- The built-in client only requests on its own events: replaying one asks now.
function M.trigger()
  vim.api.nvim_exec_autocmds('CursorMovedI', { buffer = vim.api.nvim_get_current_buf() })
end

--- Re-enabling drops the shown item and pending requests.
function M.dismiss()
  local bufnr = vim.api.nvim_get_current_buf()
  ic().enable(false, { bufnr = bufnr })
  ic().enable(true, { bufnr = bufnr })
end

return M
