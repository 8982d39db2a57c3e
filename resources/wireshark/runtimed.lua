-- Wireshark dissector for the nteract runtimed sync protocol, as exported by
-- `runtimed-inspector export FILE --format pcapng` (link type 252, Exported PDU, dissector
-- name "runtimed"). Each packet is one frame as it crossed the daemon's Unix socket: the
-- 5-byte preamble, or a u32 big-endian length and the payload.
--   tshark -X lua_script:runtimed.lua -r capture.pcapng
-- or copy it into ~/.local/lib/wireshark/plugins/.

local p = Proto("runtimed", "nteract runtimed sync protocol")

local frame_types = {
    [0x00] = "AUTOMERGE_SYNC", [0x01] = "REQUEST", [0x02] = "RESPONSE", [0x03] = "BROADCAST",
    [0x04] = "PRESENCE", [0x05] = "RUNTIME_STATE_SYNC", [0x06] = "POOL_STATE_SYNC",
    [0x07] = "SESSION_CONTROL", [0x08] = "BLOB_UPLOAD", [0x09] = "COMMS_SYNC", [0x0a] = "COMMENTS_SYNC",
}
-- which document a sync frame type carries
local doc_of = {
    [0x00] = "notebook", [0x05] = "runtime_state", [0x06] = "pool_state", [0x09] = "comms", [0x0a] = "comments",
}
local json_frames = { [0x01] = true, [0x02] = true, [0x03] = true, [0x07] = true }
local sync_types = { [0x42] = "sync (v1)", [0x43] = "sync (v2, document chunks)" }
-- an entry of a sync message's change list is an Automerge chunk: magic, checksum, type
local chunk_types = { [0] = "document", [1] = "change", [2] = "compressed change" }

local f = {
    kind = ProtoField.string("runtimed.kind", "Frame kind"),
    direction = ProtoField.string("runtimed.direction", "Direction"),
    length = ProtoField.uint32("runtimed.length", "Length", base.DEC),
    magic = ProtoField.bytes("runtimed.preamble.magic", "Magic"),
    version = ProtoField.uint8("runtimed.preamble.version", "Protocol version", base.DEC),
    ftype = ProtoField.uint8("runtimed.type", "Frame type", base.HEX, frame_types),
    type_name = ProtoField.string("runtimed.type_name", "Frame type name"),
    doc = ProtoField.string("runtimed.doc", "Document"),
    json = ProtoField.string("runtimed.json", "JSON"),
    msg = ProtoField.string("runtimed.msg", "Message"),
    id = ProtoField.string("runtimed.id", "Request id"),
    presence_type = ProtoField.string("runtimed.presence.type", "Presence type"),
    sync_msgtype = ProtoField.uint8("runtimed.sync.msgtype", "Sync message type", base.HEX, sync_types),
    heads_count = ProtoField.uint32("runtimed.sync.heads_count", "Heads", base.DEC),
    head = ProtoField.bytes("runtimed.sync.head", "Head"),
    need_count = ProtoField.uint32("runtimed.sync.need_count", "Need", base.DEC),
    need = ProtoField.bytes("runtimed.sync.need", "Needed change"),
    have_count = ProtoField.uint32("runtimed.sync.have_count", "Have", base.DEC),
    have_last_sync = ProtoField.bytes("runtimed.sync.have.last_sync", "Have: last sync"),
    bloom_len = ProtoField.uint32("runtimed.sync.have.bloom_len", "Have: bloom filter bytes", base.DEC),
    changes_count = ProtoField.uint32("runtimed.sync.changes_count", "Change list entries", base.DEC),
    change_len = ProtoField.uint32("runtimed.sync.change_len", "Change bytes", base.DEC),
    chunk_type = ProtoField.uint8("runtimed.sync.chunk_type", "Chunk type", base.DEC, chunk_types),
    change_chunks = ProtoField.uint32("runtimed.sync.change_chunks", "Change chunks", base.DEC),
    document_chunks = ProtoField.uint32("runtimed.sync.document_chunks", "Whole-document chunks", base.DEC),
    body = ProtoField.bytes("runtimed.body", "Body"),
    truncated = ProtoField.string("runtimed.error", "Decode error"),
}
p.fields = f

local f_dir = Field.new("frame.packet_flags_direction")
local json_dissector = Dissector.get("json")

-- unsigned LEB128 at offset `pos` of `tvb`: value, next offset (nil when it runs off the end)
local function uleb(tvb, pos, limit)
    local result, shift = 0, 0
    while pos < limit do
        local b = tvb(pos, 1):uint()
        pos = pos + 1
        result = result + (b % 128) * (2 ^ shift)
        if b < 128 then return result, pos end
        shift = shift + 7
    end
    return nil, pos
end

local function hashes(tvb, tree, pos, limit, count_field, item_field)
    local n, next_pos = uleb(tvb, pos, limit)
    if n == nil then return nil end
    local item = tree:add(count_field, tvb(pos, next_pos - pos), n)
    pos = next_pos
    for _ = 1, n do
        if pos + 32 > limit then return nil end
        item:add(item_field, tvb(pos, 32))
        pos = pos + 32
    end
    return pos, n
end

-- Automerge sync message header: type, heads, need, have (last_sync hashes + bloom), changes
local function dissect_sync(tvb, tree, pos, limit)
    local t = tree:add(tvb(pos, limit - pos), "Automerge sync message")
    local mt = tvb(pos, 1):uint()
    t:add(f.sync_msgtype, tvb(pos, 1))
    if not sync_types[mt] then
        t:add(f.truncated, "not an Automerge sync message")
        return nil
    end
    pos = pos + 1
    local heads
    pos, heads = hashes(tvb, t, pos, limit, f.heads_count, f.head)
    if not pos then t:add(f.truncated, "heads cut short"); return nil end
    pos = hashes(tvb, t, pos, limit, f.need_count, f.need)
    if not pos then t:add(f.truncated, "need cut short"); return nil end
    local nhave, np = uleb(tvb, pos, limit)
    if not nhave then t:add(f.truncated, "have cut short"); return nil end
    local have = t:add(f.have_count, tvb(pos, np - pos), nhave)
    pos = np
    for _ = 1, nhave do
        local nlast
        nlast, np = uleb(tvb, pos, limit)
        if not nlast or np + 32 * nlast > limit then t:add(f.truncated, "have cut short"); return nil end
        pos = np
        for _ = 1, nlast do
            have:add(f.have_last_sync, tvb(pos, 32))
            pos = pos + 32
        end
        local blen
        blen, np = uleb(tvb, pos, limit)
        if not blen or np + blen > limit then t:add(f.truncated, "bloom filter cut short"); return nil end
        have:add(f.bloom_len, tvb(pos, np - pos), blen)
        pos = np + blen
    end
    local nchanges
    nchanges, np = uleb(tvb, pos, limit)
    if not nchanges then t:add(f.truncated, "changes cut short"); return nil end
    local ch = t:add(f.changes_count, tvb(pos, np - pos), nchanges)
    pos = np
    local n_change, n_doc = 0, 0
    for _ = 1, nchanges do
        local clen
        clen, np = uleb(tvb, pos, limit)
        if not clen or np + clen > limit then t:add(f.truncated, "change cut short"); return nil end
        local entry = ch:add(f.change_len, tvb(pos, np - pos), clen)
        -- an entry holds one or more chunks back to back (a v2 message packs several changes,
        -- or a whole document, into one entry): magic, checksum, type, LEB128 length, data
        local cpos, cend = np, np + clen
        while cpos + 9 <= cend and tvb(cpos, 4):bytes():tohex() == "856F4A83" do
            local ct = tvb(cpos + 8, 1):uint()
            entry:add(f.chunk_type, tvb(cpos + 8, 1))
            if ct == 0 then n_doc = n_doc + 1 else n_change = n_change + 1 end
            local dlen, dpos = uleb(tvb, cpos + 9, cend)
            if not dlen then break end
            cpos = dpos + dlen
        end
        pos = np + clen
    end
    t:add(f.change_chunks, n_change)
    t:add(f.document_chunks, n_doc)
    if n_doc > 0 then
        return string.format("heads=%d changes=%d (%d whole documents)", heads, n_change, n_doc)
    end
    return string.format("heads=%d changes=%d", heads, n_change)
end

-- minimal CBOR: enough to find the text value of the "type" key of the top-level map
local function cbor_head(tvb, pos, limit)
    if pos >= limit then return nil end
    local b = tvb(pos, 1):uint()
    local major, info = math.floor(b / 32), b % 32
    pos = pos + 1
    if info < 24 then return major, info, pos end
    if info == 31 then return major, -1, pos end -- indefinite length
    local size = ({ [24] = 1, [25] = 2, [26] = 4, [27] = 8 })[info]
    if not size or pos + size > limit then return nil end
    local v = 0
    for i = 0, size - 1 do v = v * 256 + tvb(pos + i, 1):uint() end
    return major, v, pos + size
end

local cbor_skip
cbor_skip = function(tvb, pos, limit, depth)
    if depth > 32 then return nil end
    local major, v, np = cbor_head(tvb, pos, limit)
    if major == nil then return nil end
    if major == 0 or major == 1 or major == 7 then return np end
    if major == 2 or major == 3 then
        if v < 0 then -- indefinite string: chunks until break
            while np < limit and tvb(np, 1):uint() ~= 0xff do
                np = cbor_skip(tvb, np, limit, depth + 1)
                if not np then return nil end
            end
            return np + 1
        end
        return np + v <= limit and np + v or nil
    end
    if major == 6 then return cbor_skip(tvb, np, limit, depth + 1) end
    local items = (major == 5) and 2 or 1
    if v < 0 then
        while np < limit and tvb(np, 1):uint() ~= 0xff do
            np = cbor_skip(tvb, np, limit, depth + 1)
            if not np then return nil end
        end
        return np + 1
    end
    for _ = 1, v * items do
        np = cbor_skip(tvb, np, limit, depth + 1)
        if not np then return nil end
    end
    return np
end

local function cbor_text(tvb, pos, limit)
    local major, v, np = cbor_head(tvb, pos, limit)
    if major ~= 3 or v < 0 or np + v > limit then return nil end
    return tvb(np, v):string(ENC_UTF_8), np + v
end

local function presence_type(tvb, pos, limit)
    local major, n, np = cbor_head(tvb, pos, limit)
    if major ~= 5 then return nil end
    local i = 0
    while np < limit and (n < 0 and tvb(np, 1):uint() ~= 0xff or n >= 0 and i < n) do
        local key, vp = cbor_text(tvb, np, limit)
        if key == "type" then
            local value = cbor_text(tvb, vp, limit)
            return value
        end
        np = cbor_skip(tvb, np, limit, 0)
        if not np then return nil end
        np = cbor_skip(tvb, np, limit, 0)
        if not np then return nil end
        i = i + 1
    end
    return nil
end

-- the first top-level string member among `keys` of a JSON object (a scan, not a parser:
-- the json dissector below shows the whole tree)
local function json_member(text, keys)
    for _, k in ipairs(keys) do
        local v = text:match('^%s*{.-"' .. k .. '"%s*:%s*"([^"]*)"')
        if v then return k, v end
    end
    return nil
end

local function dissect_json(tvb, pinfo, tree, pos, limit)
    local text = tvb(pos, limit - pos):string(ENC_UTF_8)
    tree:add(f.json, tvb(pos, limit - pos), text)
    local _, id = json_member(text, { "id" })
    if id then tree:add(f.id, id) end
    local key, msg = json_member(text, { "type", "action", "event", "result", "channel", "protocol" })
    if msg then tree:add(f.msg, tvb(pos, limit - pos), msg) end
    if json_dissector then
        pcall(function() json_dissector:call(tvb(pos, limit - pos):tvb(), pinfo, tree) end)
    end
    return msg and (key .. "=" .. msg) or nil
end

function p.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    if len == 0 then return 0 end
    pinfo.cols.protocol = "runtimed"
    local t = tree:add(p, tvb(), "runtimed")
    local dir = f_dir()
    local arrow = ""
    if dir then
        local d = dir.value
        if d == 1 then
            t:add(f.direction, "daemon -> peer"); arrow = "<- "
        elseif d == 2 then
            t:add(f.direction, "peer -> daemon"); arrow = "-> "
        end
    end
    if len == 5 and tvb(0, 4):bytes():tohex() == "C0DE01AC" then
        t:add(f.kind, "preamble")
        t:add(f.magic, tvb(0, 4))
        t:add(f.version, tvb(4, 1))
        pinfo.cols.info = arrow .. "preamble v" .. tvb(4, 1):uint()
        return len
    end
    if len < 4 then
        t:add(f.truncated, "shorter than a length prefix")
        pinfo.cols.info = arrow .. "malformed"
        return len
    end
    local flen = tvb(0, 4):uint()
    t:add(f.length, tvb(0, 4))
    local limit = len
    if 4 + flen ~= len then
        -- a redacted recording keeps the length but drops the body
        t:add(f.truncated, string.format("body not captured (%d of %d bytes)", len - 4, flen))
    end
    if len == 4 then
        t:add(f.kind, flen == 0 and "empty" or "typed")
        pinfo.cols.info = arrow .. string.format("frame of %d bytes (body not captured)", flen)
        return len
    end
    local first = tvb(4, 1):uint()
    if first > 0x1f then
        -- an untyped frame: the handshake, its reply, pool JSON or a settings Automerge message
        t:add(f.kind, "untyped")
        local info
        if first == 0x7b then
            info = dissect_json(tvb, pinfo, t, 4, limit)
        elseif sync_types[first] then
            info = dissect_sync(tvb, t, 4, limit)
        else
            t:add(f.body, tvb(4, limit - 4))
        end
        pinfo.cols.info = arrow .. "untyped " .. (info or string.format("%d bytes", flen))
        return len
    end
    t:add(f.kind, "typed")
    t:add(f.ftype, tvb(4, 1))
    local name = frame_types[first] or string.format("unknown_0x%02x", first)
    t:add(f.type_name, name)
    local info = nil
    local pos = 5
    if doc_of[first] then
        t:add(f.doc, doc_of[first])
        if limit > pos then info = dissect_sync(tvb, t, pos, limit) end
        info = doc_of[first] .. (info and (" " .. info) or "")
    elseif json_frames[first] then
        if limit > pos then info = dissect_json(tvb, pinfo, t, pos, limit) end
    elseif first == 0x04 then
        if limit > pos then
            local ptype = presence_type(tvb, pos, limit)
            if ptype then
                t:add(f.presence_type, tvb(pos, limit - pos), ptype)
                info = "type=" .. ptype
            else
                t:add(f.truncated, "presence is not a CBOR map with a type")
            end
        end
    elseif limit > pos then
        t:add(f.body, tvb(pos, limit - pos))
    end
    pinfo.cols.info = arrow .. name .. (info and (" " .. info) or "")
    return len
end
