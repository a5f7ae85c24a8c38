-- Drives a real headless Neovim through the plugin, as a user would: types in insert mode, waits
-- for ghost text, accepts it with the mapped key, runs :QwenExplain and closes its float.
-- Run with `nvim --headless -u NONE -i NONE -c 'luafile nvim_e2e.lua'` (typed keys need the main
-- loop, which `-l` does not run). Inputs come from QWEN_E2E_* variables; it writes what it saw
-- as JSON to QWEN_E2E_RESULT and quits. The pytest side makes the assertions.
local env = vim.env
local api = vim.api
local uv = vim.uv
local result = { events = {} }

local function now_ms()
  return uv.hrtime() / 1e6
end

local function note(event)
  result.events[#result.events + 1] = ('%.0f ms: %s'):format(now_ms() - result.started_ms, event)
end

local function finish(err)
  result.error = err
  local file = assert(io.open(env.QWEN_E2E_RESULT, 'w'))
  file:write(vim.json.encode(result))
  file:close()
  vim.cmd('qall!')
end

-- Poll `condition` every `interval` ms (from inside the coroutine) until it returns a value.
local function wait_for(what, condition, timeout_ms, interval)
  local co = assert(coroutine.running())
  local deadline = now_ms() + timeout_ms
  local function poll()
    local ok, value = pcall(condition)
    if not ok then
      coroutine.resume(co, nil, value)
    elseif value then
      coroutine.resume(co, value)
    elseif now_ms() > deadline then
      coroutine.resume(co, nil)
    else
      vim.defer_fn(poll, interval or 10)
    end
  end
  vim.schedule(poll)
  local value, err = coroutine.yield()
  if err then
    error(err, 0)
  end
  if not value then
    error(('timed out after %d ms waiting for %s'):format(timeout_ms, what), 0)
  end
  return value
end

local function type_keys(keys)
  -- 'm': through mappings, like a user's keys; queued, so the main loop handles them in turn.
  api.nvim_feedkeys(vim.keycode(keys), 'm', false)
end

local function status(client)
  local response = client:request_sync('qwen/status', {}, 5000)
  return response and response.result or {}
end

-- The ghost text on screen: the extmark's inline text and its virtual lines.
local function ghost_text(namespace)
  local ns = api.nvim_get_namespaces()[namespace]
  if not ns then
    return nil
  end
  for _, mark in ipairs(api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
    local details = mark[4]
    if details.virt_text then
      local lines = { '' }
      for _, chunk in ipairs(details.virt_text) do
        lines[1] = lines[1] .. chunk[1]
      end
      for _, line in ipairs(details.virt_lines or {}) do
        local text = ''
        for _, chunk in ipairs(line) do
          text = text .. chunk[1]
        end
        lines[#lines + 1] = text
      end
      local text = table.concat(lines, '\n')
      if text ~= '' then
        return { text = text, row = mark[2], col = mark[3], hl = details.virt_text[1][2] }
      end
    end
  end
end

local function explain_window()
  for _, win in ipairs(api.nvim_list_wins()) do
    local buf = api.nvim_win_get_buf(win)
    if vim.b[buf].qwen_explain then
      return win
    end
  end
end

local function footer(win)
  local parts = {}
  for _, chunk in ipairs(api.nvim_win_get_config(win).footer or {}) do
    parts[#parts + 1] = type(chunk) == 'table' and chunk[1] or chunk
  end
  return table.concat(parts)
end

local function test_ghost_text(namespace)
  -- Type a statement at the end of the marked line, in insert mode.
  local row = tonumber(env.QWEN_E2E_LINE)
  api.nvim_win_set_cursor(0, { row, 0 })
  local typed_at
  api.nvim_create_autocmd('TextChangedI', {
    callback = function()
      typed_at = now_ms()
    end,
  })
  type_keys('A' .. env.QWEN_E2E_TYPE)
  local last_line = vim.split(env.QWEN_E2E_TYPE, '<CR>', { plain = true })
  wait_for('the typed text', function()
    return vim.endswith(api.nvim_get_current_line(), last_line[#last_line]) and api.nvim_get_mode().mode == 'i'
  end, 10000)
  local last_keystroke = typed_at
  note('typed ' .. vim.inspect(env.QWEN_E2E_TYPE))
  local ghost = wait_for('ghost text', function()
    return ghost_text(namespace)
  end, tonumber(env.QWEN_E2E_GHOST_TIMEOUT_MS), 5)
  result.ghost_ms = now_ms() - last_keystroke
  result.ghost = ghost.text
  result.ghost_hl = ghost.hl
  note('ghost text ' .. vim.inspect(ghost.text))

  local before = api.nvim_buf_get_lines(0, 0, -1, true)
  local cursor = api.nvim_win_get_cursor(0)
  local line = before[cursor[1]]
  local expected = vim.list_slice(before, 1, cursor[1] - 1)
  local inserted = vim.split(line:sub(1, cursor[2]) .. ghost.text .. line:sub(cursor[2] + 1), '\n', { plain = true })
  vim.list_extend(expected, inserted)
  vim.list_extend(expected, vim.list_slice(before, cursor[1] + 1))
  local tick = api.nvim_buf_get_changedtick(0)
  type_keys('<Tab>')
  wait_for('the accepted text', function()
    return api.nvim_buf_get_changedtick(0) ~= tick
  end, 10000)
  result.accepted = table.concat(api.nvim_buf_get_lines(0, 0, -1, true), '\n')
  result.expected = table.concat(expected, '\n')
  result.ghost_after_accept = ghost_text(namespace) and ghost_text(namespace).text or ''
  note('accepted')

  -- Without ghost text the key does what it did before: a plain <Tab> here.
  type_keys('<Esc>o<Tab>')
  wait_for('a plain tab', function()
    return api.nvim_get_mode().mode == 'i' and api.nvim_get_current_line():find('\t') ~= nil
  end, 10000)
  result.plain_tab_line = api.nvim_get_current_line()
  type_keys('<Esc>u')
  wait_for('normal mode', function()
    return api.nvim_get_mode().mode == 'n'
  end, 5000)
end

local function test_explain(client)
  local first, last = env.QWEN_E2E_EXPLAIN:match('(%d+),(%d+)')
  vim.cmd(('%s,%sQwenExplain'):format(first, last))
  local win = wait_for('the explain window', explain_window, 5000)
  local buf = api.nvim_win_get_buf(win)
  local snapshots = {}
  local started = now_ms()
  wait_for('the end of the explanation', function()
    local text = table.concat(api.nvim_buf_get_lines(buf, 0, -1, true), '\n')
    if text ~= '' and text ~= snapshots[#snapshots] then
      snapshots[#snapshots + 1] = text
      if #snapshots == 1 then
        result.explain_first_text_ms = now_ms() - started
      end
    end
    local state = footer(win)
    if state:find('failed') then
      error('the explanation failed: ' .. table.concat(api.nvim_buf_get_lines(buf, 0, -1, true), '\n'), 0)
    end
    return state:find('done') ~= nil
  end, 600000, 10)
  result.explain_ms = now_ms() - started
  result.explain_snapshots = snapshots
  result.explain_text = table.concat(api.nvim_buf_get_lines(buf, 0, -1, true), '\n')
  result.explain_float = api.nvim_win_get_config(win).relative ~= ''
  note(('explained in %d snapshots'):format(#snapshots))
  api.nvim_win_close(win, true)

  -- Closing the window while it streams cancels the request in the server.
  local before = #(status(client).recent or {})
  vim.cmd(('%s,%sQwenExplain'):format(first, last))
  win = wait_for('the second explain window', explain_window, 5000)
  buf = api.nvim_win_get_buf(win)
  wait_for('streamed text', function()
    return api.nvim_buf_get_lines(buf, 0, 1, true)[1] ~= ''
  end, 120000)
  api.nvim_win_close(win, true)
  note('closed the explain window')
  local cancelled = wait_for('the server to stop generating', function()
    local recent = status(client).recent or {}
    for i = before + 1, #recent do
      if recent[i].stop_reason == 'cancelled' then
        return recent[i]
      end
    end
  end, 60000, 200)
  result.cancelled_stats = cancelled
end

local function main()
  result.started_ms = now_ms()
  result.version = tostring(vim.version())
  vim.opt.runtimepath:prepend(env.QWEN_E2E_PLUGIN)
  vim.cmd('filetype on')
  local qwen = require('qwen_lsp')
  qwen.setup({
    cmd = { env.QWEN_E2E_PYTHON, '-I', '-m', 'qwen_lsp', '--log-level', 'INFO', '--log-file', env.QWEN_E2E_SERVER_LOG, 'serve' },
    -- A short explanation keeps the test short on a busy machine; it still streams.
    settings = { model = env.QWEN_E2E_MODEL, explainMaxTokens = 150 },
    ghost_text = { engine = env.QWEN_E2E_ENGINE },
  })
  vim.cmd.edit(vim.fn.fnameescape(env.QWEN_E2E_FILE))
  local client = wait_for('the client to attach', function()
    return qwen.client(0)
  end, 30000)
  result.offset_encoding = client.offset_encoding
  wait_for('the model', function()
    return status(client).state == 'ready'
  end, 180000, 200)
  note('model ready')
  local namespace = qwen.native_ghost_text() and 'nvim.lsp.inline_completion' or 'qwen_lsp.ghost'
  result.namespace = namespace
  test_ghost_text(namespace)
  if env.QWEN_E2E_EXPLAIN then -- unset or empty: ghost text only
    test_explain(client)
  end
  vim.cmd('checkhealth qwen_lsp') -- opens the report in a new buffer
  result.health = table.concat(api.nvim_buf_get_lines(0, 0, -1, true), '\n')
end

vim.schedule(function()
  coroutine.wrap(function()
    local ok, err = xpcall(main, debug.traceback)
    finish(not ok and tostring(err) or nil)
  end)()
end)
