"""The append script and the bytes we send for it: event JSON and hand-packed RESP commands
(on every publish's path, so cheaper than redis-py's general packing)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# KEYS: stream, counter, run state (its TTL follows the stream's; EXPIRE on a missing key does
# nothing); on a cluster the counter and the run state are named into the stream's hash slot.
# ARGV: maxlen, ttl, channel ('' = store only), assign ('1'/'0'), floor (the highest sequence
# the caller has written to the run; numbering never goes below it, even if the server lost
# the run), retry id (the id of the batch's last event, or ''), publish command ('PUBLISH', or
# 'SPUBLISH' for a cluster's sharded Pub/Sub, whose channel is then in the stream's slot too),
# retry window (how many of the newest entries to look for the retry id in: 1 on a first
# attempt, RETRY_WINDOW when the caller knows an earlier attempt may have been stored), then
# (json, given sequence, type) per event.
# Returns the sequences as stored. A run whose numbering would pass 2**53-1 (past it, doubles
# such as Lua's numbers cannot tell two sequences apart) is refused before anything is written.
# A retry of a batch that was stored after all (its last event is among the window's newest
# entries, by event id: the caller timed out, the server then ran the script, other writers
# may have appended since) stores nothing again and returns the sequences the batch got.
APPEND_LUA = """
local stream, counter_key = KEYS[1], KEYS[2]
local maxlen, ttl, channel, assign = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local counter = tonumber(redis.call('GET', counter_key) or '0') or 0
local floor = tonumber(ARGV[5]) or 0
local retry_id, publish, window = ARGV[6], ARGV[7], tonumber(ARGV[8]) or 1
local events = (#ARGV - 8) / 3
if floor > counter then counter = floor end
local function field(entry, name)
  local f = entry[2]
  for k = 1, #f, 2 do
    if f[k] == name then return f[k + 1] end
  end
  return nil
end
local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if newest[1] then
  local s = tonumber(field(newest[1], 'sequence'))
  if s and s > counter then counter = s end
end
if retry_id ~= '' and newest[1] then
  local needle = '"id":"' .. retry_id .. '"'
  local recent = newest
  if window > 1 then
    recent = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', window + events)
  end
  for j = 1, math.min(#recent, window) do
    local data = field(recent[j], 'data')
    if data and string.find(data, needle, 1, true) then
      if window == 1 then
        recent = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', events)
      end
      if j + events - 1 <= #recent then
        local out = {}
        for m = j + events - 1, j, -1 do
          out[#out + 1] = tonumber(field(recent[m], 'sequence')) or 0
        end
        return out
      end
      break
    end
  end
end
if counter > 9007199254740991 then
  return redis.error_reply('SEQUENCE_LIMIT the run holds a sequence past 2**53-1')
end
if assign then
  local unnumbered = 0
  for i = 10, #ARGV, 3 do
    if (tonumber(ARGV[i]) or 0) <= 0 then unnumbered = unnumbered + 1 end
  end
  if counter + unnumbered > 9007199254740991 then
    return redis.error_reply('SEQUENCE_LIMIT the run has reached the last sequence (2**53-1)')
  end
end
local out = {}
for i = 9, #ARGV, 3 do
  local body, given, etype = ARGV[i], tonumber(ARGV[i + 1]) or 0, ARGV[i + 2]
  local seq, data = given, body
  if given > 0 then
    if given > counter then counter = given end
  elseif assign then
    counter = counter + 1
    seq = counter
    local head = string.format('{"sequence":%d', seq)
    if body == '{}' then data = head .. '}' else data = head .. ',' .. string.sub(body, 2) end
  end
  local seqtext = string.format('%d', seq)
  redis.call('XADD', stream, 'MAXLEN', maxlen, '*', 'data', data, 'sequence', seqtext,
             'type', etype)
  if channel ~= '' then redis.call(publish, channel, data) end
  out[#out + 1] = seq
end
redis.call('EXPIRE', stream, ttl)
if KEYS[3] then redis.call('EXPIRE', KEYS[3], ttl) end
if counter > 0 then redis.call('SET', counter_key, string.format('%d', counter), 'EX', ttl) end
return out
"""
APPEND_SHA = hashlib.sha1(APPEND_LUA.encode()).hexdigest()  # what EVALSHA names it by
WINDOW_ARG = 7
"""Index of the retry window in the script's ARGV list (0-based, as the caller builds it)."""
RETRY_WINDOW = 10_000
"""Newest entries a retry looks through for its batch: other writers' appends in between."""


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def dumps(event: dict[str, Any]) -> str:
    return _ENCODER.encode(event)


PING = b"*1\r\n$4\r\nPING\r\n"


def pack(*args: str | bytes | int) -> bytes:
    """One command in RESP, as redis-py's ``pack_command`` writes it for str, bytes and int
    arguments, in a third of the time (it is on every publish's path)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        else:
            data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)
