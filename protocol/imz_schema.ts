// Generated from imz.proto by scripts/gen-schema.mjs: do not edit.
export const schema = {
 "nested": {
  "imz": {
   "nested": {
    "Op": {
     "values": {
      "OP_UNSPECIFIED": 0,
      "HELLO": 1,
      "AUTH": 2,
      "STAT": 3,
      "READDIR": 4,
      "READ": 5,
      "JOURNAL": 6,
      "SUBSCRIBE": 7,
      "PUT_BLOB": 8,
      "REINTEGRATE": 9,
      "SNAPSHOT": 10,
      "LIST": 11,
      "PING": 12,
      "ERROR": 13,
      "PUT_BLOBS": 14
     }
    },
    "Envelope": {
     "oneofs": {
      "body": {
       "oneof": [
        "hello",
        "helloReply",
        "stat",
        "statReply",
        "readdir",
        "entries",
        "read",
        "readReply",
        "journal",
        "journalReply",
        "snapshot",
        "snapshotReply",
        "list",
        "putBlob",
        "blobReply",
        "reintegrate",
        "reintegrateReply",
        "auth",
        "authReply",
        "putBlobs",
        "blobsReply"
       ]
      }
     },
     "fields": {
      "xid": {
       "type": "uint32",
       "id": 1
      },
      "op": {
       "type": "Op",
       "id": 2
      },
      "reply": {
       "type": "bool",
       "id": 3
      },
      "last": {
       "type": "bool",
       "id": 4
      },
      "error": {
       "type": "Error",
       "id": 5
      },
      "hello": {
       "type": "HelloRequest",
       "id": 10
      },
      "helloReply": {
       "type": "HelloReply",
       "id": 11,
       "protoName": "hello_reply"
      },
      "stat": {
       "type": "PathRequest",
       "id": 12
      },
      "statReply": {
       "type": "Entry",
       "id": 13,
       "protoName": "stat_reply"
      },
      "readdir": {
       "type": "PathRequest",
       "id": 14
      },
      "entries": {
       "type": "EntryList",
       "id": 15
      },
      "read": {
       "type": "ReadRequest",
       "id": 16
      },
      "readReply": {
       "type": "ReadReply",
       "id": 17,
       "protoName": "read_reply"
      },
      "journal": {
       "type": "JournalRequest",
       "id": 18
      },
      "journalReply": {
       "type": "JournalReply",
       "id": 19,
       "protoName": "journal_reply"
      },
      "snapshot": {
       "type": "SnapshotRequest",
       "id": 20
      },
      "snapshotReply": {
       "type": "SnapshotReply",
       "id": 21,
       "protoName": "snapshot_reply"
      },
      "list": {
       "type": "ListRequest",
       "id": 22
      },
      "putBlob": {
       "type": "BlobRequest",
       "id": 23,
       "protoName": "put_blob"
      },
      "blobReply": {
       "type": "BlobReply",
       "id": 24,
       "protoName": "blob_reply"
      },
      "reintegrate": {
       "type": "ReintegrateRequest",
       "id": 25
      },
      "reintegrateReply": {
       "type": "ReintegrateReply",
       "id": 26,
       "protoName": "reintegrate_reply"
      },
      "auth": {
       "type": "AuthRequest",
       "id": 27
      },
      "authReply": {
       "type": "AuthReply",
       "id": 28,
       "protoName": "auth_reply"
      },
      "putBlobs": {
       "type": "BlobsRequest",
       "id": 29,
       "protoName": "put_blobs"
      },
      "blobsReply": {
       "type": "BlobsReply",
       "id": 30,
       "protoName": "blobs_reply"
      }
     }
    },
    "Error": {
     "fields": {
      "code": {
       "type": "string",
       "id": 1
      },
      "message": {
       "type": "string",
       "id": 2
      }
     }
    },
    "EntryType": {
     "values": {
      "NONE": 0,
      "FILE": 1,
      "DIR": 2,
      "SYMLINK": 3
     }
    },
    "Entry": {
     "fields": {
      "path": {
       "type": "string",
       "id": 1
      },
      "type": {
       "type": "EntryType",
       "id": 2
      },
      "size": {
       "type": "double",
       "id": 3
      },
      "mode": {
       "type": "uint32",
       "id": 4
      },
      "mtimeMs": {
       "type": "double",
       "id": 5,
       "protoName": "mtime_ms"
      },
      "hash": {
       "type": "bytes",
       "id": 6
      },
      "target": {
       "type": "string",
       "id": 7
      },
      "version": {
       "type": "double",
       "id": 8
      }
     }
    },
    "HelloRequest": {
     "fields": {
      "version": {
       "type": "uint32",
       "id": 1
      },
      "maxFrame": {
       "type": "uint32",
       "id": 2,
       "protoName": "max_frame"
      },
      "client": {
       "type": "string",
       "id": 3
      },
      "replicaId": {
       "type": "string",
       "id": 4,
       "protoName": "replica_id"
      },
      "nonce": {
       "type": "bytes",
       "id": 5
      }
     }
    },
    "Access": {
     "values": {
      "ACCESS_NONE": 0,
      "READ_ONLY": 1,
      "READ_WRITE": 2
     }
    },
    "HelloReply": {
     "fields": {
      "version": {
       "type": "uint32",
       "id": 1
      },
      "maxFrame": {
       "type": "uint32",
       "id": 2,
       "protoName": "max_frame"
      },
      "serverId": {
       "type": "string",
       "id": 3,
       "protoName": "server_id"
      },
      "journalFirst": {
       "type": "double",
       "id": 4,
       "protoName": "journal_first"
      },
      "journalLast": {
       "type": "double",
       "id": 5,
       "protoName": "journal_last"
      },
      "server": {
       "type": "string",
       "id": 6
      },
      "nonce": {
       "type": "bytes",
       "id": 7
      },
      "access": {
       "type": "Access",
       "id": 8
      },
      "upstream": {
       "type": "string",
       "id": 9
      },
      "upstreamReachable": {
       "type": "bool",
       "id": 10,
       "protoName": "upstream_reachable"
      },
      "originSeq": {
       "type": "double",
       "id": 11,
       "protoName": "origin_seq"
      }
     }
    },
    "AuthRequest": {
     "fields": {
      "proof": {
       "type": "bytes",
       "id": 1
      }
     }
    },
    "AuthReply": {
     "fields": {
      "proof": {
       "type": "bytes",
       "id": 1
      },
      "access": {
       "type": "Access",
       "id": 2
      },
      "originSeq": {
       "type": "double",
       "id": 3,
       "protoName": "origin_seq"
      }
     }
    },
    "PathRequest": {
     "fields": {
      "path": {
       "type": "string",
       "id": 1
      }
     }
    },
    "EntryList": {
     "fields": {
      "entries": {
       "rule": "repeated",
       "type": "Entry",
       "id": 1
      },
      "cursor": {
       "type": "double",
       "id": 2
      },
      "skipped": {
       "rule": "repeated",
       "type": "Skipped",
       "id": 3
      }
     }
    },
    "Skipped": {
     "fields": {
      "path": {
       "type": "string",
       "id": 1
      },
      "reason": {
       "type": "string",
       "id": 2
      }
     }
    },
    "ReadRequest": {
     "fields": {
      "path": {
       "type": "string",
       "id": 1
      },
      "hash": {
       "type": "bytes",
       "id": 2
      },
      "offset": {
       "type": "double",
       "id": 3
      },
      "length": {
       "type": "uint32",
       "id": 4
      }
     }
    },
    "ReadReply": {
     "fields": {
      "data": {
       "type": "bytes",
       "id": 1
      },
      "offset": {
       "type": "double",
       "id": 2
      }
     }
    },
    "JournalRequest": {
     "fields": {
      "since": {
       "type": "double",
       "id": 1
      },
      "limit": {
       "type": "uint32",
       "id": 2
      }
     }
    },
    "JournalReply": {
     "fields": {
      "records": {
       "rule": "repeated",
       "type": "Record",
       "id": 1
      },
      "last": {
       "type": "double",
       "id": 2
      },
      "more": {
       "type": "bool",
       "id": 3
      }
     }
    },
    "Record": {
     "fields": {
      "seq": {
       "type": "double",
       "id": 1
      },
      "change": {
       "type": "Change",
       "id": 2
      },
      "entry": {
       "type": "Entry",
       "id": 3
      },
      "origin": {
       "type": "string",
       "id": 4
      },
      "originSeq": {
       "type": "double",
       "id": 5,
       "protoName": "origin_seq"
      },
      "timeMs": {
       "type": "double",
       "id": 6,
       "protoName": "time_ms"
      }
     }
    },
    "Change": {
     "values": {
      "CHANGE_UNSPECIFIED": 0,
      "CREATE": 1,
      "MODIFY": 2,
      "META": 3,
      "REMOVE": 4,
      "MKDIR": 5,
      "RMDIR": 6,
      "SYMLINK": 7,
      "RETYPE": 8
     }
    },
    "SnapshotRequest": {
     "fields": {
      "paths": {
       "rule": "repeated",
       "type": "string",
       "id": 1
      }
     }
    },
    "SnapshotReply": {
     "fields": {
      "tar": {
       "type": "bytes",
       "id": 1
      }
     }
    },
    "ListRequest": {
     "fields": {
      "prefix": {
       "type": "string",
       "id": 1
      }
     }
    },
    "BlobRequest": {
     "fields": {
      "hash": {
       "type": "bytes",
       "id": 1
      },
      "size": {
       "type": "double",
       "id": 2
      },
      "offset": {
       "type": "double",
       "id": 3
      },
      "data": {
       "type": "bytes",
       "id": 4
      },
      "last": {
       "type": "bool",
       "id": 5
      },
      "query": {
       "rule": "repeated",
       "type": "bytes",
       "id": 6
      },
      "mode": {
       "type": "uint32",
       "id": 7
      },
      "mtimeMs": {
       "type": "double",
       "id": 8,
       "protoName": "mtime_ms"
      }
     }
    },
    "BlobReply": {
     "fields": {
      "present": {
       "type": "bool",
       "id": 1
      },
      "have": {
       "type": "double",
       "id": 2
      },
      "held": {
       "rule": "repeated",
       "type": "bool",
       "id": 3
      }
     }
    },
    "BlobsRequest": {
     "fields": {
      "blobs": {
       "rule": "repeated",
       "type": "BlobRequest",
       "id": 1
      }
     }
    },
    "BlobsReply": {
     "fields": {
      "replies": {
       "rule": "repeated",
       "type": "BlobReply",
       "id": 1
      }
     }
    },
    "OpKind": {
     "values": {
      "OPKIND_UNSPECIFIED": 0,
      "STORE": 1,
      "MAKEDIR": 2,
      "LINK": 3,
      "UNLINK": 4,
      "REMOVEDIR": 5,
      "SETATTR": 6,
      "MOVE": 7
     }
    },
    "Operation": {
     "fields": {
      "seq": {
       "type": "double",
       "id": 1
      },
      "kind": {
       "type": "OpKind",
       "id": 2
      },
      "path": {
       "type": "string",
       "id": 3
      },
      "fromPath": {
       "type": "string",
       "id": 4,
       "protoName": "from_path"
      },
      "base": {
       "type": "double",
       "id": 5
      },
      "fromBase": {
       "type": "double",
       "id": 6,
       "protoName": "from_base"
      },
      "state": {
       "type": "Entry",
       "id": 7
      },
      "baseMode": {
       "type": "uint32",
       "id": 8,
       "protoName": "base_mode"
      }
     }
    },
    "ReintegrateRequest": {
     "fields": {
      "replicaId": {
       "type": "string",
       "id": 1,
       "protoName": "replica_id"
      },
      "ops": {
       "rule": "repeated",
       "type": "Operation",
       "id": 2
      },
      "policy": {
       "type": "string",
       "id": 3
      }
     }
    },
    "OpStatus": {
     "values": {
      "OPSTATUS_UNSPECIFIED": 0,
      "APPLIED": 1,
      "DUPLICATE": 2,
      "SAME": 3,
      "CONFLICT": 4,
      "REJECTED": 5
     }
    },
    "OpResult": {
     "fields": {
      "seq": {
       "type": "double",
       "id": 1
      },
      "status": {
       "type": "OpStatus",
       "id": 2
      },
      "version": {
       "type": "double",
       "id": 3
      },
      "server": {
       "type": "Entry",
       "id": 4
      },
      "conflictClass": {
       "type": "string",
       "id": 5,
       "protoName": "conflict_class"
      },
      "keptAs": {
       "type": "string",
       "id": 6,
       "protoName": "kept_as"
      },
      "displaced": {
       "type": "string",
       "id": 7
      },
      "error": {
       "type": "Error",
       "id": 8
      }
     }
    },
    "ReintegrateReply": {
     "fields": {
      "results": {
       "rule": "repeated",
       "type": "OpResult",
       "id": 1
      }
     }
    }
   }
  }
 }
} as const;
