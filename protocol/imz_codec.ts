// @ts-nocheck
// Generated from imz.proto by scripts/gen-schema.mjs: do not edit.
import $protobuf from "protobufjs/minimal.js";

const $Reader = $protobuf.Reader, $Writer = $protobuf.Writer, $util = $protobuf.util;
const $Object = $util.global.Object, $undefined = $util.global.undefined, $Error = $util.global.Error, $RangeError = $util.global.RangeError;

const $root = $protobuf.roots["default"] || ($protobuf.roots["default"] = {});

export const imz = $root.imz = (() => {

    const imz = {};

    imz.Op = (function() {
        const valuesById = $Object.create(null), values = $Object.create(valuesById);
        values[valuesById[0] = "OP_UNSPECIFIED"] = 0;
        values[valuesById[1] = "HELLO"] = 1;
        values[valuesById[2] = "AUTH"] = 2;
        values[valuesById[3] = "STAT"] = 3;
        values[valuesById[4] = "READDIR"] = 4;
        values[valuesById[5] = "READ"] = 5;
        values[valuesById[6] = "JOURNAL"] = 6;
        values[valuesById[7] = "SUBSCRIBE"] = 7;
        values[valuesById[8] = "PUT_BLOB"] = 8;
        values[valuesById[9] = "REINTEGRATE"] = 9;
        values[valuesById[10] = "SNAPSHOT"] = 10;
        values[valuesById[11] = "LIST"] = 11;
        values[valuesById[12] = "PING"] = 12;
        values[valuesById[13] = "ERROR"] = 13;
        values[valuesById[14] = "PUT_BLOBS"] = 14;
        return values;
    })();

    imz.Envelope = (function() {

        const Envelope = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        Envelope.prototype.xid = 0;
        Envelope.prototype.op = 0;
        Envelope.prototype.reply = false;
        Envelope.prototype.last = false;
        Envelope.prototype.error = null;
        Envelope.prototype.hello = null;
        Envelope.prototype.helloReply = null;
        Envelope.prototype.stat = null;
        Envelope.prototype.statReply = null;
        Envelope.prototype.readdir = null;
        Envelope.prototype.entries = null;
        Envelope.prototype.read = null;
        Envelope.prototype.readReply = null;
        Envelope.prototype.journal = null;
        Envelope.prototype.journalReply = null;
        Envelope.prototype.snapshot = null;
        Envelope.prototype.snapshotReply = null;
        Envelope.prototype.list = null;
        Envelope.prototype.putBlob = null;
        Envelope.prototype.blobReply = null;
        Envelope.prototype.reintegrate = null;
        Envelope.prototype.reintegrateReply = null;
        Envelope.prototype.auth = null;
        Envelope.prototype.authReply = null;
        Envelope.prototype.putBlobs = null;
        Envelope.prototype.blobsReply = null;

        let $oneOfFields;

        $Object.defineProperty(Envelope.prototype, "body", {
            get: $util.oneOfGetter($oneOfFields = ["hello", "helloReply", "stat", "statReply", "readdir", "entries", "read", "readReply", "journal", "journalReply", "snapshot", "snapshotReply", "list", "putBlob", "blobReply", "reintegrate", "reintegrateReply", "auth", "authReply", "putBlobs", "blobsReply"]),
            set: $util.oneOfSetter($oneOfFields)
        });

        Envelope.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.xid != null && $Object.hasOwnProperty.call(message, "xid") && message.xid !== 0)
                writer.uint32(8).uint32(message.xid);
            if (message.op != null && $Object.hasOwnProperty.call(message, "op") && message.op !== 0)
                writer.uint32(16).int32(message.op);
            if (message.reply != null && $Object.hasOwnProperty.call(message, "reply") && message.reply !== false)
                writer.uint32(24).bool(message.reply);
            if (message.last != null && $Object.hasOwnProperty.call(message, "last") && message.last !== false)
                writer.uint32(32).bool(message.last);
            if (message.error != null && $Object.hasOwnProperty.call(message, "error"))
                $root.imz.Error.encode(message.error, writer.uint32(42).fork(), _depth + 1).ldelim();
            if (message.hello != null && $Object.hasOwnProperty.call(message, "hello"))
                $root.imz.HelloRequest.encode(message.hello, writer.uint32(82).fork(), _depth + 1).ldelim();
            if (message.helloReply != null && $Object.hasOwnProperty.call(message, "helloReply"))
                $root.imz.HelloReply.encode(message.helloReply, writer.uint32(90).fork(), _depth + 1).ldelim();
            if (message.stat != null && $Object.hasOwnProperty.call(message, "stat"))
                $root.imz.PathRequest.encode(message.stat, writer.uint32(98).fork(), _depth + 1).ldelim();
            if (message.statReply != null && $Object.hasOwnProperty.call(message, "statReply"))
                $root.imz.Entry.encode(message.statReply, writer.uint32(106).fork(), _depth + 1).ldelim();
            if (message.readdir != null && $Object.hasOwnProperty.call(message, "readdir"))
                $root.imz.PathRequest.encode(message.readdir, writer.uint32(114).fork(), _depth + 1).ldelim();
            if (message.entries != null && $Object.hasOwnProperty.call(message, "entries"))
                $root.imz.EntryList.encode(message.entries, writer.uint32(122).fork(), _depth + 1).ldelim();
            if (message.read != null && $Object.hasOwnProperty.call(message, "read"))
                $root.imz.ReadRequest.encode(message.read, writer.uint32(130).fork(), _depth + 1).ldelim();
            if (message.readReply != null && $Object.hasOwnProperty.call(message, "readReply"))
                $root.imz.ReadReply.encode(message.readReply, writer.uint32(138).fork(), _depth + 1).ldelim();
            if (message.journal != null && $Object.hasOwnProperty.call(message, "journal"))
                $root.imz.JournalRequest.encode(message.journal, writer.uint32(146).fork(), _depth + 1).ldelim();
            if (message.journalReply != null && $Object.hasOwnProperty.call(message, "journalReply"))
                $root.imz.JournalReply.encode(message.journalReply, writer.uint32(154).fork(), _depth + 1).ldelim();
            if (message.snapshot != null && $Object.hasOwnProperty.call(message, "snapshot"))
                $root.imz.SnapshotRequest.encode(message.snapshot, writer.uint32(162).fork(), _depth + 1).ldelim();
            if (message.snapshotReply != null && $Object.hasOwnProperty.call(message, "snapshotReply"))
                $root.imz.SnapshotReply.encode(message.snapshotReply, writer.uint32(170).fork(), _depth + 1).ldelim();
            if (message.list != null && $Object.hasOwnProperty.call(message, "list"))
                $root.imz.ListRequest.encode(message.list, writer.uint32(178).fork(), _depth + 1).ldelim();
            if (message.putBlob != null && $Object.hasOwnProperty.call(message, "putBlob"))
                $root.imz.BlobRequest.encode(message.putBlob, writer.uint32(186).fork(), _depth + 1).ldelim();
            if (message.blobReply != null && $Object.hasOwnProperty.call(message, "blobReply"))
                $root.imz.BlobReply.encode(message.blobReply, writer.uint32(194).fork(), _depth + 1).ldelim();
            if (message.reintegrate != null && $Object.hasOwnProperty.call(message, "reintegrate"))
                $root.imz.ReintegrateRequest.encode(message.reintegrate, writer.uint32(202).fork(), _depth + 1).ldelim();
            if (message.reintegrateReply != null && $Object.hasOwnProperty.call(message, "reintegrateReply"))
                $root.imz.ReintegrateReply.encode(message.reintegrateReply, writer.uint32(210).fork(), _depth + 1).ldelim();
            if (message.auth != null && $Object.hasOwnProperty.call(message, "auth"))
                $root.imz.AuthRequest.encode(message.auth, writer.uint32(218).fork(), _depth + 1).ldelim();
            if (message.authReply != null && $Object.hasOwnProperty.call(message, "authReply"))
                $root.imz.AuthReply.encode(message.authReply, writer.uint32(226).fork(), _depth + 1).ldelim();
            if (message.putBlobs != null && $Object.hasOwnProperty.call(message, "putBlobs"))
                $root.imz.BlobsRequest.encode(message.putBlobs, writer.uint32(234).fork(), _depth + 1).ldelim();
            if (message.blobsReply != null && $Object.hasOwnProperty.call(message, "blobsReply"))
                $root.imz.BlobsReply.encode(message.blobsReply, writer.uint32(242).fork(), _depth + 1).ldelim();
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        Envelope.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.Envelope();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.xid = value;
                        else
                            delete message.xid;
                        continue;
                    }
                case 2: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.int32())
                            message.op = value;
                        else
                            delete message.op;
                        continue;
                    }
                case 3: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.bool())
                            message.reply = value;
                        else
                            delete message.reply;
                        continue;
                    }
                case 4: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.bool())
                            message.last = value;
                        else
                            delete message.last;
                        continue;
                    }
                case 5: {
                        if (wireType !== 2)
                            break;
                        message.error = $root.imz.Error.decode(reader, reader.size(), $undefined, _depth + 1, message.error);
                        continue;
                    }
                case 10: {
                        if (wireType !== 2)
                            break;
                        message.hello = $root.imz.HelloRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.hello);
                        message.body = "hello";
                        continue;
                    }
                case 11: {
                        if (wireType !== 2)
                            break;
                        message.helloReply = $root.imz.HelloReply.decode(reader, reader.size(), $undefined, _depth + 1, message.helloReply);
                        message.body = "helloReply";
                        continue;
                    }
                case 12: {
                        if (wireType !== 2)
                            break;
                        message.stat = $root.imz.PathRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.stat);
                        message.body = "stat";
                        continue;
                    }
                case 13: {
                        if (wireType !== 2)
                            break;
                        message.statReply = $root.imz.Entry.decode(reader, reader.size(), $undefined, _depth + 1, message.statReply);
                        message.body = "statReply";
                        continue;
                    }
                case 14: {
                        if (wireType !== 2)
                            break;
                        message.readdir = $root.imz.PathRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.readdir);
                        message.body = "readdir";
                        continue;
                    }
                case 15: {
                        if (wireType !== 2)
                            break;
                        message.entries = $root.imz.EntryList.decode(reader, reader.size(), $undefined, _depth + 1, message.entries);
                        message.body = "entries";
                        continue;
                    }
                case 16: {
                        if (wireType !== 2)
                            break;
                        message.read = $root.imz.ReadRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.read);
                        message.body = "read";
                        continue;
                    }
                case 17: {
                        if (wireType !== 2)
                            break;
                        message.readReply = $root.imz.ReadReply.decode(reader, reader.size(), $undefined, _depth + 1, message.readReply);
                        message.body = "readReply";
                        continue;
                    }
                case 18: {
                        if (wireType !== 2)
                            break;
                        message.journal = $root.imz.JournalRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.journal);
                        message.body = "journal";
                        continue;
                    }
                case 19: {
                        if (wireType !== 2)
                            break;
                        message.journalReply = $root.imz.JournalReply.decode(reader, reader.size(), $undefined, _depth + 1, message.journalReply);
                        message.body = "journalReply";
                        continue;
                    }
                case 20: {
                        if (wireType !== 2)
                            break;
                        message.snapshot = $root.imz.SnapshotRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.snapshot);
                        message.body = "snapshot";
                        continue;
                    }
                case 21: {
                        if (wireType !== 2)
                            break;
                        message.snapshotReply = $root.imz.SnapshotReply.decode(reader, reader.size(), $undefined, _depth + 1, message.snapshotReply);
                        message.body = "snapshotReply";
                        continue;
                    }
                case 22: {
                        if (wireType !== 2)
                            break;
                        message.list = $root.imz.ListRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.list);
                        message.body = "list";
                        continue;
                    }
                case 23: {
                        if (wireType !== 2)
                            break;
                        message.putBlob = $root.imz.BlobRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.putBlob);
                        message.body = "putBlob";
                        continue;
                    }
                case 24: {
                        if (wireType !== 2)
                            break;
                        message.blobReply = $root.imz.BlobReply.decode(reader, reader.size(), $undefined, _depth + 1, message.blobReply);
                        message.body = "blobReply";
                        continue;
                    }
                case 25: {
                        if (wireType !== 2)
                            break;
                        message.reintegrate = $root.imz.ReintegrateRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.reintegrate);
                        message.body = "reintegrate";
                        continue;
                    }
                case 26: {
                        if (wireType !== 2)
                            break;
                        message.reintegrateReply = $root.imz.ReintegrateReply.decode(reader, reader.size(), $undefined, _depth + 1, message.reintegrateReply);
                        message.body = "reintegrateReply";
                        continue;
                    }
                case 27: {
                        if (wireType !== 2)
                            break;
                        message.auth = $root.imz.AuthRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.auth);
                        message.body = "auth";
                        continue;
                    }
                case 28: {
                        if (wireType !== 2)
                            break;
                        message.authReply = $root.imz.AuthReply.decode(reader, reader.size(), $undefined, _depth + 1, message.authReply);
                        message.body = "authReply";
                        continue;
                    }
                case 29: {
                        if (wireType !== 2)
                            break;
                        message.putBlobs = $root.imz.BlobsRequest.decode(reader, reader.size(), $undefined, _depth + 1, message.putBlobs);
                        message.body = "putBlobs";
                        continue;
                    }
                case 30: {
                        if (wireType !== 2)
                            break;
                        message.blobsReply = $root.imz.BlobsReply.decode(reader, reader.size(), $undefined, _depth + 1, message.blobsReply);
                        message.body = "blobsReply";
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return Envelope;
    })();

    imz.Error = (function() {

        const Error = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        Error.prototype.code = "";
        Error.prototype.message = "";

        Error.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.code != null && $Object.hasOwnProperty.call(message, "code") && message.code !== "")
                writer.uint32(10).string(message.code);
            if (message.message != null && $Object.hasOwnProperty.call(message, "message") && message.message !== "")
                writer.uint32(18).string(message.message);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        Error.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.Error();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.code = value;
                        else
                            delete message.code;
                        continue;
                    }
                case 2: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.message = value;
                        else
                            delete message.message;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return Error;
    })();

    imz.EntryType = (function() {
        const valuesById = $Object.create(null), values = $Object.create(valuesById);
        values[valuesById[0] = "NONE"] = 0;
        values[valuesById[1] = "FILE"] = 1;
        values[valuesById[2] = "DIR"] = 2;
        values[valuesById[3] = "SYMLINK"] = 3;
        return values;
    })();

    imz.Entry = (function() {

        const Entry = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        Entry.prototype.path = "";
        Entry.prototype.type = 0;
        Entry.prototype.size = 0;
        Entry.prototype.mode = 0;
        Entry.prototype.mtimeMs = 0;
        Entry.prototype.hash = $util.newBuffer([]);
        Entry.prototype.target = "";
        Entry.prototype.version = 0;

        Entry.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.path != null && $Object.hasOwnProperty.call(message, "path") && message.path !== "")
                writer.uint32(10).string(message.path);
            if (message.type != null && $Object.hasOwnProperty.call(message, "type") && message.type !== 0)
                writer.uint32(16).int32(message.type);
            if (message.size != null && $Object.hasOwnProperty.call(message, "size") && !$Object.is(message.size, 0))
                writer.uint32(25).double(message.size);
            if (message.mode != null && $Object.hasOwnProperty.call(message, "mode") && message.mode !== 0)
                writer.uint32(32).uint32(message.mode);
            if (message.mtimeMs != null && $Object.hasOwnProperty.call(message, "mtimeMs") && !$Object.is(message.mtimeMs, 0))
                writer.uint32(41).double(message.mtimeMs);
            if (message.hash != null && $Object.hasOwnProperty.call(message, "hash") && message.hash.length)
                writer.uint32(50).bytes(message.hash);
            if (message.target != null && $Object.hasOwnProperty.call(message, "target") && message.target !== "")
                writer.uint32(58).string(message.target);
            if (message.version != null && $Object.hasOwnProperty.call(message, "version") && !$Object.is(message.version, 0))
                writer.uint32(65).double(message.version);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        Entry.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.Entry();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.path = value;
                        else
                            delete message.path;
                        continue;
                    }
                case 2: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.int32())
                            message.type = value;
                        else
                            delete message.type;
                        continue;
                    }
                case 3: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.size = value;
                        else
                            delete message.size;
                        continue;
                    }
                case 4: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.mode = value;
                        else
                            delete message.mode;
                        continue;
                    }
                case 5: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.mtimeMs = value;
                        else
                            delete message.mtimeMs;
                        continue;
                    }
                case 6: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.hash = value;
                        else
                            delete message.hash;
                        continue;
                    }
                case 7: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.target = value;
                        else
                            delete message.target;
                        continue;
                    }
                case 8: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.version = value;
                        else
                            delete message.version;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return Entry;
    })();

    imz.HelloRequest = (function() {

        const HelloRequest = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        HelloRequest.prototype.version = 0;
        HelloRequest.prototype.maxFrame = 0;
        HelloRequest.prototype.client = "";
        HelloRequest.prototype.replicaId = "";
        HelloRequest.prototype.nonce = $util.newBuffer([]);

        HelloRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.version != null && $Object.hasOwnProperty.call(message, "version") && message.version !== 0)
                writer.uint32(8).uint32(message.version);
            if (message.maxFrame != null && $Object.hasOwnProperty.call(message, "maxFrame") && message.maxFrame !== 0)
                writer.uint32(16).uint32(message.maxFrame);
            if (message.client != null && $Object.hasOwnProperty.call(message, "client") && message.client !== "")
                writer.uint32(26).string(message.client);
            if (message.replicaId != null && $Object.hasOwnProperty.call(message, "replicaId") && message.replicaId !== "")
                writer.uint32(34).string(message.replicaId);
            if (message.nonce != null && $Object.hasOwnProperty.call(message, "nonce") && message.nonce.length)
                writer.uint32(42).bytes(message.nonce);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        HelloRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.HelloRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.version = value;
                        else
                            delete message.version;
                        continue;
                    }
                case 2: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.maxFrame = value;
                        else
                            delete message.maxFrame;
                        continue;
                    }
                case 3: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.client = value;
                        else
                            delete message.client;
                        continue;
                    }
                case 4: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.replicaId = value;
                        else
                            delete message.replicaId;
                        continue;
                    }
                case 5: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.nonce = value;
                        else
                            delete message.nonce;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return HelloRequest;
    })();

    imz.Access = (function() {
        const valuesById = $Object.create(null), values = $Object.create(valuesById);
        values[valuesById[0] = "ACCESS_NONE"] = 0;
        values[valuesById[1] = "READ_ONLY"] = 1;
        values[valuesById[2] = "READ_WRITE"] = 2;
        return values;
    })();

    imz.HelloReply = (function() {

        const HelloReply = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        HelloReply.prototype.version = 0;
        HelloReply.prototype.maxFrame = 0;
        HelloReply.prototype.serverId = "";
        HelloReply.prototype.journalFirst = 0;
        HelloReply.prototype.journalLast = 0;
        HelloReply.prototype.server = "";
        HelloReply.prototype.nonce = $util.newBuffer([]);
        HelloReply.prototype.access = 0;
        HelloReply.prototype.upstream = "";
        HelloReply.prototype.upstreamReachable = false;
        HelloReply.prototype.originSeq = 0;

        HelloReply.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.version != null && $Object.hasOwnProperty.call(message, "version") && message.version !== 0)
                writer.uint32(8).uint32(message.version);
            if (message.maxFrame != null && $Object.hasOwnProperty.call(message, "maxFrame") && message.maxFrame !== 0)
                writer.uint32(16).uint32(message.maxFrame);
            if (message.serverId != null && $Object.hasOwnProperty.call(message, "serverId") && message.serverId !== "")
                writer.uint32(26).string(message.serverId);
            if (message.journalFirst != null && $Object.hasOwnProperty.call(message, "journalFirst") && !$Object.is(message.journalFirst, 0))
                writer.uint32(33).double(message.journalFirst);
            if (message.journalLast != null && $Object.hasOwnProperty.call(message, "journalLast") && !$Object.is(message.journalLast, 0))
                writer.uint32(41).double(message.journalLast);
            if (message.server != null && $Object.hasOwnProperty.call(message, "server") && message.server !== "")
                writer.uint32(50).string(message.server);
            if (message.nonce != null && $Object.hasOwnProperty.call(message, "nonce") && message.nonce.length)
                writer.uint32(58).bytes(message.nonce);
            if (message.access != null && $Object.hasOwnProperty.call(message, "access") && message.access !== 0)
                writer.uint32(64).int32(message.access);
            if (message.upstream != null && $Object.hasOwnProperty.call(message, "upstream") && message.upstream !== "")
                writer.uint32(74).string(message.upstream);
            if (message.upstreamReachable != null && $Object.hasOwnProperty.call(message, "upstreamReachable") && message.upstreamReachable !== false)
                writer.uint32(80).bool(message.upstreamReachable);
            if (message.originSeq != null && $Object.hasOwnProperty.call(message, "originSeq") && !$Object.is(message.originSeq, 0))
                writer.uint32(89).double(message.originSeq);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        HelloReply.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.HelloReply();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.version = value;
                        else
                            delete message.version;
                        continue;
                    }
                case 2: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.maxFrame = value;
                        else
                            delete message.maxFrame;
                        continue;
                    }
                case 3: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.serverId = value;
                        else
                            delete message.serverId;
                        continue;
                    }
                case 4: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.journalFirst = value;
                        else
                            delete message.journalFirst;
                        continue;
                    }
                case 5: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.journalLast = value;
                        else
                            delete message.journalLast;
                        continue;
                    }
                case 6: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.server = value;
                        else
                            delete message.server;
                        continue;
                    }
                case 7: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.nonce = value;
                        else
                            delete message.nonce;
                        continue;
                    }
                case 8: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.int32())
                            message.access = value;
                        else
                            delete message.access;
                        continue;
                    }
                case 9: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.upstream = value;
                        else
                            delete message.upstream;
                        continue;
                    }
                case 10: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.bool())
                            message.upstreamReachable = value;
                        else
                            delete message.upstreamReachable;
                        continue;
                    }
                case 11: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.originSeq = value;
                        else
                            delete message.originSeq;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return HelloReply;
    })();

    imz.AuthRequest = (function() {

        const AuthRequest = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        AuthRequest.prototype.proof = $util.newBuffer([]);

        AuthRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.proof != null && $Object.hasOwnProperty.call(message, "proof") && message.proof.length)
                writer.uint32(10).bytes(message.proof);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        AuthRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.AuthRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.proof = value;
                        else
                            delete message.proof;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return AuthRequest;
    })();

    imz.AuthReply = (function() {

        const AuthReply = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        AuthReply.prototype.proof = $util.newBuffer([]);
        AuthReply.prototype.access = 0;
        AuthReply.prototype.originSeq = 0;

        AuthReply.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.proof != null && $Object.hasOwnProperty.call(message, "proof") && message.proof.length)
                writer.uint32(10).bytes(message.proof);
            if (message.access != null && $Object.hasOwnProperty.call(message, "access") && message.access !== 0)
                writer.uint32(16).int32(message.access);
            if (message.originSeq != null && $Object.hasOwnProperty.call(message, "originSeq") && !$Object.is(message.originSeq, 0))
                writer.uint32(25).double(message.originSeq);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        AuthReply.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.AuthReply();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.proof = value;
                        else
                            delete message.proof;
                        continue;
                    }
                case 2: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.int32())
                            message.access = value;
                        else
                            delete message.access;
                        continue;
                    }
                case 3: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.originSeq = value;
                        else
                            delete message.originSeq;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return AuthReply;
    })();

    imz.PathRequest = (function() {

        const PathRequest = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        PathRequest.prototype.path = "";

        PathRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.path != null && $Object.hasOwnProperty.call(message, "path") && message.path !== "")
                writer.uint32(10).string(message.path);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        PathRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.PathRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.path = value;
                        else
                            delete message.path;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return PathRequest;
    })();

    imz.EntryList = (function() {

        const EntryList = function (properties) {
            this.entries = [];
            this.skipped = [];
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        EntryList.prototype.entries = $util.emptyArray;
        EntryList.prototype.cursor = 0;
        EntryList.prototype.skipped = $util.emptyArray;

        EntryList.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.entries != null && message.entries.length)
                for (let i = 0; i < message.entries.length; ++i)
                    $root.imz.Entry.encode(message.entries[i], writer.uint32(10).fork(), _depth + 1).ldelim();
            if (message.cursor != null && $Object.hasOwnProperty.call(message, "cursor") && !$Object.is(message.cursor, 0))
                writer.uint32(17).double(message.cursor);
            if (message.skipped != null && message.skipped.length)
                for (let i = 0; i < message.skipped.length; ++i)
                    $root.imz.Skipped.encode(message.skipped[i], writer.uint32(26).fork(), _depth + 1).ldelim();
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        EntryList.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.EntryList();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if (!(message.entries && message.entries.length))
                            message.entries = [];
                        message.entries.push($root.imz.Entry.decode(reader, reader.size(), $undefined, _depth + 1));
                        continue;
                    }
                case 2: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.cursor = value;
                        else
                            delete message.cursor;
                        continue;
                    }
                case 3: {
                        if (wireType !== 2)
                            break;
                        if (!(message.skipped && message.skipped.length))
                            message.skipped = [];
                        message.skipped.push($root.imz.Skipped.decode(reader, reader.size(), $undefined, _depth + 1));
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return EntryList;
    })();

    imz.Skipped = (function() {

        const Skipped = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        Skipped.prototype.path = "";
        Skipped.prototype.reason = "";

        Skipped.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.path != null && $Object.hasOwnProperty.call(message, "path") && message.path !== "")
                writer.uint32(10).string(message.path);
            if (message.reason != null && $Object.hasOwnProperty.call(message, "reason") && message.reason !== "")
                writer.uint32(18).string(message.reason);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        Skipped.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.Skipped();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.path = value;
                        else
                            delete message.path;
                        continue;
                    }
                case 2: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.reason = value;
                        else
                            delete message.reason;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return Skipped;
    })();

    imz.ReadRequest = (function() {

        const ReadRequest = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        ReadRequest.prototype.path = "";
        ReadRequest.prototype.hash = $util.newBuffer([]);
        ReadRequest.prototype.offset = 0;
        ReadRequest.prototype.length = 0;

        ReadRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.path != null && $Object.hasOwnProperty.call(message, "path") && message.path !== "")
                writer.uint32(10).string(message.path);
            if (message.hash != null && $Object.hasOwnProperty.call(message, "hash") && message.hash.length)
                writer.uint32(18).bytes(message.hash);
            if (message.offset != null && $Object.hasOwnProperty.call(message, "offset") && !$Object.is(message.offset, 0))
                writer.uint32(25).double(message.offset);
            if (message.length != null && $Object.hasOwnProperty.call(message, "length") && message.length !== 0)
                writer.uint32(32).uint32(message.length);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        ReadRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.ReadRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.path = value;
                        else
                            delete message.path;
                        continue;
                    }
                case 2: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.hash = value;
                        else
                            delete message.hash;
                        continue;
                    }
                case 3: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.offset = value;
                        else
                            delete message.offset;
                        continue;
                    }
                case 4: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.length = value;
                        else
                            delete message.length;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return ReadRequest;
    })();

    imz.ReadReply = (function() {

        const ReadReply = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        ReadReply.prototype.data = $util.newBuffer([]);
        ReadReply.prototype.offset = 0;

        ReadReply.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.data != null && $Object.hasOwnProperty.call(message, "data") && message.data.length)
                writer.uint32(10).bytes(message.data);
            if (message.offset != null && $Object.hasOwnProperty.call(message, "offset") && !$Object.is(message.offset, 0))
                writer.uint32(17).double(message.offset);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        ReadReply.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.ReadReply();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.data = value;
                        else
                            delete message.data;
                        continue;
                    }
                case 2: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.offset = value;
                        else
                            delete message.offset;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return ReadReply;
    })();

    imz.JournalRequest = (function() {

        const JournalRequest = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        JournalRequest.prototype.since = 0;
        JournalRequest.prototype.limit = 0;

        JournalRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.since != null && $Object.hasOwnProperty.call(message, "since") && !$Object.is(message.since, 0))
                writer.uint32(9).double(message.since);
            if (message.limit != null && $Object.hasOwnProperty.call(message, "limit") && message.limit !== 0)
                writer.uint32(16).uint32(message.limit);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        JournalRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.JournalRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.since = value;
                        else
                            delete message.since;
                        continue;
                    }
                case 2: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.limit = value;
                        else
                            delete message.limit;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return JournalRequest;
    })();

    imz.JournalReply = (function() {

        const JournalReply = function (properties) {
            this.records = [];
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        JournalReply.prototype.records = $util.emptyArray;
        JournalReply.prototype.last = 0;
        JournalReply.prototype.more = false;

        JournalReply.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.records != null && message.records.length)
                for (let i = 0; i < message.records.length; ++i)
                    $root.imz.Record.encode(message.records[i], writer.uint32(10).fork(), _depth + 1).ldelim();
            if (message.last != null && $Object.hasOwnProperty.call(message, "last") && !$Object.is(message.last, 0))
                writer.uint32(17).double(message.last);
            if (message.more != null && $Object.hasOwnProperty.call(message, "more") && message.more !== false)
                writer.uint32(24).bool(message.more);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        JournalReply.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.JournalReply();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if (!(message.records && message.records.length))
                            message.records = [];
                        message.records.push($root.imz.Record.decode(reader, reader.size(), $undefined, _depth + 1));
                        continue;
                    }
                case 2: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.last = value;
                        else
                            delete message.last;
                        continue;
                    }
                case 3: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.bool())
                            message.more = value;
                        else
                            delete message.more;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return JournalReply;
    })();

    imz.Record = (function() {

        const Record = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        Record.prototype.seq = 0;
        Record.prototype.change = 0;
        Record.prototype.entry = null;
        Record.prototype.origin = "";
        Record.prototype.originSeq = 0;
        Record.prototype.timeMs = 0;

        Record.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.seq != null && $Object.hasOwnProperty.call(message, "seq") && !$Object.is(message.seq, 0))
                writer.uint32(9).double(message.seq);
            if (message.change != null && $Object.hasOwnProperty.call(message, "change") && message.change !== 0)
                writer.uint32(16).int32(message.change);
            if (message.entry != null && $Object.hasOwnProperty.call(message, "entry"))
                $root.imz.Entry.encode(message.entry, writer.uint32(26).fork(), _depth + 1).ldelim();
            if (message.origin != null && $Object.hasOwnProperty.call(message, "origin") && message.origin !== "")
                writer.uint32(34).string(message.origin);
            if (message.originSeq != null && $Object.hasOwnProperty.call(message, "originSeq") && !$Object.is(message.originSeq, 0))
                writer.uint32(41).double(message.originSeq);
            if (message.timeMs != null && $Object.hasOwnProperty.call(message, "timeMs") && !$Object.is(message.timeMs, 0))
                writer.uint32(49).double(message.timeMs);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        Record.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.Record();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.seq = value;
                        else
                            delete message.seq;
                        continue;
                    }
                case 2: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.int32())
                            message.change = value;
                        else
                            delete message.change;
                        continue;
                    }
                case 3: {
                        if (wireType !== 2)
                            break;
                        message.entry = $root.imz.Entry.decode(reader, reader.size(), $undefined, _depth + 1, message.entry);
                        continue;
                    }
                case 4: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.origin = value;
                        else
                            delete message.origin;
                        continue;
                    }
                case 5: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.originSeq = value;
                        else
                            delete message.originSeq;
                        continue;
                    }
                case 6: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.timeMs = value;
                        else
                            delete message.timeMs;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return Record;
    })();

    imz.Change = (function() {
        const valuesById = $Object.create(null), values = $Object.create(valuesById);
        values[valuesById[0] = "CHANGE_UNSPECIFIED"] = 0;
        values[valuesById[1] = "CREATE"] = 1;
        values[valuesById[2] = "MODIFY"] = 2;
        values[valuesById[3] = "META"] = 3;
        values[valuesById[4] = "REMOVE"] = 4;
        values[valuesById[5] = "MKDIR"] = 5;
        values[valuesById[6] = "RMDIR"] = 6;
        values[valuesById[7] = "SYMLINK"] = 7;
        values[valuesById[8] = "RETYPE"] = 8;
        return values;
    })();

    imz.SnapshotRequest = (function() {

        const SnapshotRequest = function (properties) {
            this.paths = [];
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        SnapshotRequest.prototype.paths = $util.emptyArray;

        SnapshotRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.paths != null && message.paths.length)
                for (let i = 0; i < message.paths.length; ++i)
                    writer.uint32(10).string(message.paths[i]);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        SnapshotRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.SnapshotRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if (!(message.paths && message.paths.length))
                            message.paths = [];
                        message.paths.push(reader.stringVerify());
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return SnapshotRequest;
    })();

    imz.SnapshotReply = (function() {

        const SnapshotReply = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        SnapshotReply.prototype.tar = $util.newBuffer([]);

        SnapshotReply.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.tar != null && $Object.hasOwnProperty.call(message, "tar") && message.tar.length)
                writer.uint32(10).bytes(message.tar);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        SnapshotReply.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.SnapshotReply();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.tar = value;
                        else
                            delete message.tar;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return SnapshotReply;
    })();

    imz.ListRequest = (function() {

        const ListRequest = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        ListRequest.prototype.prefix = "";

        ListRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.prefix != null && $Object.hasOwnProperty.call(message, "prefix") && message.prefix !== "")
                writer.uint32(10).string(message.prefix);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        ListRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.ListRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.prefix = value;
                        else
                            delete message.prefix;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return ListRequest;
    })();

    imz.BlobRequest = (function() {

        const BlobRequest = function (properties) {
            this.query = [];
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        BlobRequest.prototype.hash = $util.newBuffer([]);
        BlobRequest.prototype.size = 0;
        BlobRequest.prototype.offset = 0;
        BlobRequest.prototype.data = $util.newBuffer([]);
        BlobRequest.prototype.last = false;
        BlobRequest.prototype.query = $util.emptyArray;
        BlobRequest.prototype.mode = 0;
        BlobRequest.prototype.mtimeMs = 0;

        BlobRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.hash != null && $Object.hasOwnProperty.call(message, "hash") && message.hash.length)
                writer.uint32(10).bytes(message.hash);
            if (message.size != null && $Object.hasOwnProperty.call(message, "size") && !$Object.is(message.size, 0))
                writer.uint32(17).double(message.size);
            if (message.offset != null && $Object.hasOwnProperty.call(message, "offset") && !$Object.is(message.offset, 0))
                writer.uint32(25).double(message.offset);
            if (message.data != null && $Object.hasOwnProperty.call(message, "data") && message.data.length)
                writer.uint32(34).bytes(message.data);
            if (message.last != null && $Object.hasOwnProperty.call(message, "last") && message.last !== false)
                writer.uint32(40).bool(message.last);
            if (message.query != null && message.query.length)
                for (let i = 0; i < message.query.length; ++i)
                    writer.uint32(50).bytes(message.query[i]);
            if (message.mode != null && $Object.hasOwnProperty.call(message, "mode") && message.mode !== 0)
                writer.uint32(56).uint32(message.mode);
            if (message.mtimeMs != null && $Object.hasOwnProperty.call(message, "mtimeMs") && !$Object.is(message.mtimeMs, 0))
                writer.uint32(65).double(message.mtimeMs);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        BlobRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.BlobRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.hash = value;
                        else
                            delete message.hash;
                        continue;
                    }
                case 2: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.size = value;
                        else
                            delete message.size;
                        continue;
                    }
                case 3: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.offset = value;
                        else
                            delete message.offset;
                        continue;
                    }
                case 4: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.bytes()).length)
                            message.data = value;
                        else
                            delete message.data;
                        continue;
                    }
                case 5: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.bool())
                            message.last = value;
                        else
                            delete message.last;
                        continue;
                    }
                case 6: {
                        if (wireType !== 2)
                            break;
                        if (!(message.query && message.query.length))
                            message.query = [];
                        message.query.push(reader.bytes());
                        continue;
                    }
                case 7: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.mode = value;
                        else
                            delete message.mode;
                        continue;
                    }
                case 8: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.mtimeMs = value;
                        else
                            delete message.mtimeMs;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return BlobRequest;
    })();

    imz.BlobReply = (function() {

        const BlobReply = function (properties) {
            this.held = [];
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        BlobReply.prototype.present = false;
        BlobReply.prototype.have = 0;
        BlobReply.prototype.held = $util.emptyArray;

        BlobReply.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.present != null && $Object.hasOwnProperty.call(message, "present") && message.present !== false)
                writer.uint32(8).bool(message.present);
            if (message.have != null && $Object.hasOwnProperty.call(message, "have") && !$Object.is(message.have, 0))
                writer.uint32(17).double(message.have);
            if (message.held != null && message.held.length)
                writer.uint32(26).bools(message.held);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        BlobReply.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.BlobReply();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.bool())
                            message.present = value;
                        else
                            delete message.present;
                        continue;
                    }
                case 2: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.have = value;
                        else
                            delete message.have;
                        continue;
                    }
                case 3: {
                        if (wireType === 2) {
                            if (!(message.held && message.held.length))
                                message.held = [];
                            reader.bools(message.held);
                            continue;
                        }
                        if (wireType !== 0)
                            break;
                        if (!(message.held && message.held.length))
                            message.held = [];
                        message.held.push(reader.bool());
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return BlobReply;
    })();

    imz.BlobsRequest = (function() {

        const BlobsRequest = function (properties) {
            this.blobs = [];
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        BlobsRequest.prototype.blobs = $util.emptyArray;

        BlobsRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.blobs != null && message.blobs.length)
                for (let i = 0; i < message.blobs.length; ++i)
                    $root.imz.BlobRequest.encode(message.blobs[i], writer.uint32(10).fork(), _depth + 1).ldelim();
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        BlobsRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.BlobsRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if (!(message.blobs && message.blobs.length))
                            message.blobs = [];
                        message.blobs.push($root.imz.BlobRequest.decode(reader, reader.size(), $undefined, _depth + 1));
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return BlobsRequest;
    })();

    imz.BlobsReply = (function() {

        const BlobsReply = function (properties) {
            this.replies = [];
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        BlobsReply.prototype.replies = $util.emptyArray;

        BlobsReply.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.replies != null && message.replies.length)
                for (let i = 0; i < message.replies.length; ++i)
                    $root.imz.BlobReply.encode(message.replies[i], writer.uint32(10).fork(), _depth + 1).ldelim();
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        BlobsReply.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.BlobsReply();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if (!(message.replies && message.replies.length))
                            message.replies = [];
                        message.replies.push($root.imz.BlobReply.decode(reader, reader.size(), $undefined, _depth + 1));
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return BlobsReply;
    })();

    imz.OpKind = (function() {
        const valuesById = $Object.create(null), values = $Object.create(valuesById);
        values[valuesById[0] = "OPKIND_UNSPECIFIED"] = 0;
        values[valuesById[1] = "STORE"] = 1;
        values[valuesById[2] = "MAKEDIR"] = 2;
        values[valuesById[3] = "LINK"] = 3;
        values[valuesById[4] = "UNLINK"] = 4;
        values[valuesById[5] = "REMOVEDIR"] = 5;
        values[valuesById[6] = "SETATTR"] = 6;
        values[valuesById[7] = "MOVE"] = 7;
        return values;
    })();

    imz.Operation = (function() {

        const Operation = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        Operation.prototype.seq = 0;
        Operation.prototype.kind = 0;
        Operation.prototype.path = "";
        Operation.prototype.fromPath = "";
        Operation.prototype.base = 0;
        Operation.prototype.fromBase = 0;
        Operation.prototype.state = null;
        Operation.prototype.baseMode = 0;

        Operation.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.seq != null && $Object.hasOwnProperty.call(message, "seq") && !$Object.is(message.seq, 0))
                writer.uint32(9).double(message.seq);
            if (message.kind != null && $Object.hasOwnProperty.call(message, "kind") && message.kind !== 0)
                writer.uint32(16).int32(message.kind);
            if (message.path != null && $Object.hasOwnProperty.call(message, "path") && message.path !== "")
                writer.uint32(26).string(message.path);
            if (message.fromPath != null && $Object.hasOwnProperty.call(message, "fromPath") && message.fromPath !== "")
                writer.uint32(34).string(message.fromPath);
            if (message.base != null && $Object.hasOwnProperty.call(message, "base") && !$Object.is(message.base, 0))
                writer.uint32(41).double(message.base);
            if (message.fromBase != null && $Object.hasOwnProperty.call(message, "fromBase") && !$Object.is(message.fromBase, 0))
                writer.uint32(49).double(message.fromBase);
            if (message.state != null && $Object.hasOwnProperty.call(message, "state"))
                $root.imz.Entry.encode(message.state, writer.uint32(58).fork(), _depth + 1).ldelim();
            if (message.baseMode != null && $Object.hasOwnProperty.call(message, "baseMode") && message.baseMode !== 0)
                writer.uint32(64).uint32(message.baseMode);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        Operation.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.Operation();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.seq = value;
                        else
                            delete message.seq;
                        continue;
                    }
                case 2: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.int32())
                            message.kind = value;
                        else
                            delete message.kind;
                        continue;
                    }
                case 3: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.path = value;
                        else
                            delete message.path;
                        continue;
                    }
                case 4: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.fromPath = value;
                        else
                            delete message.fromPath;
                        continue;
                    }
                case 5: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.base = value;
                        else
                            delete message.base;
                        continue;
                    }
                case 6: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.fromBase = value;
                        else
                            delete message.fromBase;
                        continue;
                    }
                case 7: {
                        if (wireType !== 2)
                            break;
                        message.state = $root.imz.Entry.decode(reader, reader.size(), $undefined, _depth + 1, message.state);
                        continue;
                    }
                case 8: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.uint32())
                            message.baseMode = value;
                        else
                            delete message.baseMode;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return Operation;
    })();

    imz.ReintegrateRequest = (function() {

        const ReintegrateRequest = function (properties) {
            this.ops = [];
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        ReintegrateRequest.prototype.replicaId = "";
        ReintegrateRequest.prototype.ops = $util.emptyArray;
        ReintegrateRequest.prototype.policy = "";

        ReintegrateRequest.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.replicaId != null && $Object.hasOwnProperty.call(message, "replicaId") && message.replicaId !== "")
                writer.uint32(10).string(message.replicaId);
            if (message.ops != null && message.ops.length)
                for (let i = 0; i < message.ops.length; ++i)
                    $root.imz.Operation.encode(message.ops[i], writer.uint32(18).fork(), _depth + 1).ldelim();
            if (message.policy != null && $Object.hasOwnProperty.call(message, "policy") && message.policy !== "")
                writer.uint32(26).string(message.policy);
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        ReintegrateRequest.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.ReintegrateRequest();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.replicaId = value;
                        else
                            delete message.replicaId;
                        continue;
                    }
                case 2: {
                        if (wireType !== 2)
                            break;
                        if (!(message.ops && message.ops.length))
                            message.ops = [];
                        message.ops.push($root.imz.Operation.decode(reader, reader.size(), $undefined, _depth + 1));
                        continue;
                    }
                case 3: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.policy = value;
                        else
                            delete message.policy;
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return ReintegrateRequest;
    })();

    imz.OpStatus = (function() {
        const valuesById = $Object.create(null), values = $Object.create(valuesById);
        values[valuesById[0] = "OPSTATUS_UNSPECIFIED"] = 0;
        values[valuesById[1] = "APPLIED"] = 1;
        values[valuesById[2] = "DUPLICATE"] = 2;
        values[valuesById[3] = "SAME"] = 3;
        values[valuesById[4] = "CONFLICT"] = 4;
        values[valuesById[5] = "REJECTED"] = 5;
        return values;
    })();

    imz.OpResult = (function() {

        const OpResult = function (properties) {
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        OpResult.prototype.seq = 0;
        OpResult.prototype.status = 0;
        OpResult.prototype.version = 0;
        OpResult.prototype.server = null;
        OpResult.prototype.conflictClass = "";
        OpResult.prototype.keptAs = "";
        OpResult.prototype.displaced = "";
        OpResult.prototype.error = null;

        OpResult.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.seq != null && $Object.hasOwnProperty.call(message, "seq") && !$Object.is(message.seq, 0))
                writer.uint32(9).double(message.seq);
            if (message.status != null && $Object.hasOwnProperty.call(message, "status") && message.status !== 0)
                writer.uint32(16).int32(message.status);
            if (message.version != null && $Object.hasOwnProperty.call(message, "version") && !$Object.is(message.version, 0))
                writer.uint32(25).double(message.version);
            if (message.server != null && $Object.hasOwnProperty.call(message, "server"))
                $root.imz.Entry.encode(message.server, writer.uint32(34).fork(), _depth + 1).ldelim();
            if (message.conflictClass != null && $Object.hasOwnProperty.call(message, "conflictClass") && message.conflictClass !== "")
                writer.uint32(42).string(message.conflictClass);
            if (message.keptAs != null && $Object.hasOwnProperty.call(message, "keptAs") && message.keptAs !== "")
                writer.uint32(50).string(message.keptAs);
            if (message.displaced != null && $Object.hasOwnProperty.call(message, "displaced") && message.displaced !== "")
                writer.uint32(58).string(message.displaced);
            if (message.error != null && $Object.hasOwnProperty.call(message, "error"))
                $root.imz.Error.encode(message.error, writer.uint32(66).fork(), _depth + 1).ldelim();
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        OpResult.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message, value;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.OpResult();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.seq = value;
                        else
                            delete message.seq;
                        continue;
                    }
                case 2: {
                        if (wireType !== 0)
                            break;
                        if (value = reader.int32())
                            message.status = value;
                        else
                            delete message.status;
                        continue;
                    }
                case 3: {
                        if (wireType !== 1)
                            break;
                        if (!$Object.is(value = reader.double(), 0))
                            message.version = value;
                        else
                            delete message.version;
                        continue;
                    }
                case 4: {
                        if (wireType !== 2)
                            break;
                        message.server = $root.imz.Entry.decode(reader, reader.size(), $undefined, _depth + 1, message.server);
                        continue;
                    }
                case 5: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.conflictClass = value;
                        else
                            delete message.conflictClass;
                        continue;
                    }
                case 6: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.keptAs = value;
                        else
                            delete message.keptAs;
                        continue;
                    }
                case 7: {
                        if (wireType !== 2)
                            break;
                        if ((value = reader.stringVerify()).length)
                            message.displaced = value;
                        else
                            delete message.displaced;
                        continue;
                    }
                case 8: {
                        if (wireType !== 2)
                            break;
                        message.error = $root.imz.Error.decode(reader, reader.size(), $undefined, _depth + 1, message.error);
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return OpResult;
    })();

    imz.ReintegrateReply = (function() {

        const ReintegrateReply = function (properties) {
            this.results = [];
            if (properties)
                for (let keys = $Object.keys(properties), i = 0; i < keys.length; ++i)
                    if (properties[keys[i]] != null && keys[i] !== "__proto__")
                        this[keys[i]] = properties[keys[i]];
        };

        ReintegrateReply.prototype.results = $util.emptyArray;

        ReintegrateReply.encode = function (message, writer, _depth) {
            if (!writer)
                writer = $Writer.create();
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $util.recursionLimit)
                throw $Error("max depth exceeded");
            if (message.results != null && message.results.length)
                for (let i = 0; i < message.results.length; ++i)
                    $root.imz.OpResult.encode(message.results[i], writer.uint32(10).fork(), _depth + 1).ldelim();
            if (message.$unknowns != null && $Object.hasOwnProperty.call(message, "$unknowns"))
                for (let i = 0; i < message.$unknowns.length; ++i)
                    writer.raw(message.$unknowns[i]);
            return writer;
        };

        ReintegrateReply.decode = function (reader, length, _end, _depth, _target) {
            if (!(reader instanceof $Reader))
                reader = $Reader.create(reader);
            if (_depth === $undefined)
                _depth = 0;
            if (_depth > $Reader.recursionLimit)
                throw $Error("max depth exceeded");
            let end, message;
            if (length === $undefined)
                end = reader.len;
            else {
                end = reader.pos + length;
                if (end > reader.len)
                    throw $RangeError("index out of range");
                length = reader.len;
                reader.len = end;
            }
            message = _target || new $root.imz.ReintegrateReply();
            while (reader.pos < end) {
                let start = reader.pos;
                let tag = reader.tag();
                if (tag === _end) {
                    _end = $undefined;
                    break;
                }
                let wireType = tag & 7;
                switch (tag >>>= 3) {
                case 1: {
                        if (wireType !== 2)
                            break;
                        if (!(message.results && message.results.length))
                            message.results = [];
                        message.results.push($root.imz.OpResult.decode(reader, reader.size(), $undefined, _depth + 1));
                        continue;
                    }
                }
                reader.skipType(wireType, _depth, tag);
                if (!reader.discardUnknown) {
                    $util.makeProp(message, "$unknowns", false);
                    (message.$unknowns || (message.$unknowns = [])).push(reader.raw(start, reader.pos));
                }
            }
            if (length !== $undefined) {
                if (reader.pos !== end)
                    throw $RangeError("index out of range");
                reader.len = length;
            }
            if (_end !== $undefined)
                throw $Error("missing end group");
            return message;
        };

        return ReintegrateReply;
    })();

    return imz;
})();

export {
  $root as default
};
