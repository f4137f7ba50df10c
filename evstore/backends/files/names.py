"""Every file name of a store directory, in one place.

Why one module: the layout (docs/FORMAT.md) is the file backend's business
alone.  The engine, the disk layer, verify and repair all name files through
these constants, so a name changes in one line and nothing above the backend
seam can build a path.  A leaf module: it imports nothing.
"""

MARKER = "evstore.json"          #: the store's marker: format and version
LOCK_FILE = "writer.lock"        #: the writer lock's holder line
LOG_DIR = "log"                  #: the commit log's segments and indexes
STREAMS_DIR = "streams"          #: one directory per stream (streams/XX/KEY/)
SNAPSHOTS_DIR = "snapshots"      #: snapshots/XX/KEY/VERSION.snap
CHECKPOINTS_DIR = "checkpoints"  #: one file per durable consumer
SETTINGS_FILE = "settings.json"  #: the store's settings (a checked JSON document)
STATE_FILE = "sync-state"        #: boot id and the position stream logs are synced to
FSYNC_FAILED = "fsync-failed"    #: present once an fsync failed (writes refused)
QUARANTINE = "quarantine"        #: what repair removed, kept
IMPORT_SPOOL = ".tmp-import"     #: an import's spool files while it checks its input
CUTS_FILE = "cuts.json"          #: delete/truncate: each cut stream's floor (a checked document)
RETENTION_FILE = "retention.json"  #: the retention rules (a checked document)
COMPACT_JOURNAL = "compacting"   #: a compaction step's file moves, finished by the next writer
COMPACT_TMP = ".tmp-compact-"    #: prefix of the files a compaction step writes before moving them

LOG_SEG = ".log"                 #: commit-log segment suffix
LOG_IDX = ".idx"                 #: commit-log index suffix
STREAM_SEG = ".seg"              #: stream-log segment suffix
STREAM_IDX = ".idx"              #: stream-log index suffix
ID_FILE = "id"                   #: a stream directory's stream id
SNAPSHOT_SUFFIX = ".snap"
CHECKPOINT_SUFFIX = ".json"
CHECKPOINT_LOCK_SUFFIX = ".lock"
