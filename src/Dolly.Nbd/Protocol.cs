namespace Dolly.Nbd;

/// <summary>
/// Constants of the fixed-newstyle NBD protocol (NetworkBlockDevice/nbd doc/proto.md). Everything on the
/// wire is big-endian.
/// <code>
/// handshake   S: u64 NBDMAGIC  u64 IHAVEOPT  u16 handshake flags      C: u32 client flags
/// option      C: u64 IHAVEOPT  u32 option  u32 length  data
/// opt reply   S: u64 0x3e889045565a9  u32 option  u32 reply type  u32 length  data
/// request     C: u32 0x25609513  u16 command flags  u16 type  u64 cookie  u64 offset  u32 length  [data]
/// simple      S: u32 0x67446698  u32 error  u64 cookie  [data]
/// structured  S: u32 0x668e33ef  u16 flags  u16 type  u64 cookie  u32 length  payload
/// </code>
/// </summary>
internal static class Nbd
{
    public const ulong NbdMagic = 0x4e42444d41474943;
    public const ulong IHaveOpt = 0x49484156454F5054;
    public const ulong OptReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    public const ushort FlagFixedNewstyle = 1;
    public const ushort FlagNoZeroes = 2;
    public const uint ClientFlagFixedNewstyle = 1;
    public const uint ClientFlagNoZeroes = 2;

    public const uint OptExportName = 1;
    public const uint OptAbort = 2;
    public const uint OptList = 3;
    public const uint OptStartTls = 5;
    public const uint OptInfo = 6;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;
    public const uint OptListMetaContext = 9;
    public const uint OptSetMetaContext = 10;

    public const uint RepAck = 1;
    public const uint RepServer = 2;
    public const uint RepInfo = 3;
    public const uint RepMetaContext = 4;
    public const uint RepErrUnsup = 0x80000001;
    public const uint RepErrPolicy = 0x80000002;
    public const uint RepErrInvalid = 0x80000003;
    public const uint RepErrPlatform = 0x80000004;
    public const uint RepErrTlsReqd = 0x80000005;
    public const uint RepErrUnknown = 0x80000006;
    public const uint RepErrShutdown = 0x80000007;
    public const uint RepErrBlockSizeReqd = 0x80000008;
    public const uint RepErrTooBig = 0x80000009;

    public const ushort InfoExport = 0;
    public const ushort InfoName = 1;
    public const ushort InfoDescription = 2;
    public const ushort InfoBlockSize = 3;

    public const ushort TFlagHasFlags = 1 << 0;
    public const ushort TFlagReadOnly = 1 << 1;
    public const ushort TFlagSendFlush = 1 << 2;
    public const ushort TFlagSendFua = 1 << 3;
    public const ushort TFlagSendTrim = 1 << 5;
    public const ushort TFlagSendWriteZeroes = 1 << 6;
    public const ushort TFlagSendDf = 1 << 7;
    public const ushort TFlagCanMultiConn = 1 << 8;
    public const ushort TFlagSendCache = 1 << 10;
    public const ushort TFlagSendFastZero = 1 << 11;

    public const ushort CmdFlagFua = 1 << 0;
    public const ushort CmdFlagNoHole = 1 << 1;
    public const ushort CmdFlagDf = 1 << 2;
    public const ushort CmdFlagReqOne = 1 << 3;
    public const ushort CmdFlagFastZero = 1 << 4;

    public const ushort CmdRead = 0;
    public const ushort CmdWrite = 1;
    public const ushort CmdDisc = 2;
    public const ushort CmdFlush = 3;
    public const ushort CmdTrim = 4;
    public const ushort CmdCache = 5;
    public const ushort CmdWriteZeroes = 6;
    public const ushort CmdBlockStatus = 7;

    public const ushort ReplyFlagDone = 1;
    public const ushort ReplyTypeNone = 0;
    public const ushort ReplyTypeOffsetData = 1;
    public const ushort ReplyTypeOffsetHole = 2;
    public const ushort ReplyTypeBlockStatus = 5;
    public const ushort ReplyTypeError = 32769;
    public const ushort ReplyTypeErrorOffset = 32770;

    public const uint EPerm = 1;
    public const uint EIo = 5;
    public const uint ENoMem = 12;
    public const uint EInval = 22;
    public const uint ENoSpc = 28;
    public const uint EOverflow = 75;
    public const uint ENotSup = 95;
    public const uint EShutdown = 108;

    public const string BaseAllocation = "base:allocation";
    public const string DeltaPrefix = "dolly:delta:";
    public const uint StateHole = 1;
    public const uint StateZero = 2;
    public const uint StateDirty = 1;
}
