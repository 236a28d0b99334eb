-- Splitting the not-yet-typed rest of a suggestion into the next word or the next line,
-- and inserting a piece of it at the cursor.
local M = {}

--- The next word of `rest`: leading blanks (newlines too) and one run of word or
--- punctuation characters.
function M.next_word(rest)
  return rest:match('^%s*[%w_]+') or rest:match('^%s*[^%w_%s]+') or rest
end

--- The rest of the current line of `rest`, or the whole next line when `rest` starts one.
function M.next_line(rest)
  return rest:match('^\n[^\n]*') or rest:match('^[^\n]+') or rest
end

--- Replace the 0-based byte range with `text` in the current buffer; the cursor goes after it.
function M.replace(row, col, end_row, end_col, text)
  local lines = vim.split(text, '\n', { plain = true })
  vim.api.nvim_buf_set_text(0, row, col, end_row, end_col, lines)
  local last = #lines == 1 and col + #lines[1] or #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { row + #lines, last })
end

--- Insert `text` at the cursor of the current window and move the cursor past it.
function M.insert_at_cursor(text)
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  M.replace(row - 1, col, row - 1, col, text)
end

--- The part of `insert_text` (which replaces the buffer from (`start_row`, `start_col`), 0-based
--- bytes) that is not typed yet at the cursor, or nil when the buffer no longer agrees with it.
function M.untyped(insert_text, start_row, start_col)
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  if row - 1 ~= start_row or col < start_col then
    return nil
  end
  local line = vim.api.nvim_buf_get_lines(0, start_row, start_row + 1, true)[1]
  local typed = line:sub(start_col + 1, col)
  if insert_text:sub(1, #typed) ~= typed then
    return nil
  end
  return insert_text:sub(#typed + 1)
end

return M
