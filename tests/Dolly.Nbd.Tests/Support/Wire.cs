namespace Dolly.Nbd.Tests.Support;

/// <summary>
/// Protocol numbers from NetworkBlockDevice/nbd doc/proto.md, written out again rather than taken from the
/// server, so that a wrong constant in the server is caught by the tests.
/// </summary>
internal static class Wire
{
    public const ulong NbdMagic = 0x4e42444d41474943;
    public const ulong IHaveOpt = 0x49484156454F5054;
    public const ulong OptReplyMagic = 0x0003e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    public const ushort HandshakeFixedNewstyle = 1;
    public const ushort HandshakeNoZeroes = 2;
    public const uint ClientFixedNewstyle = 1;
    public const uint ClientNoZeroes = 2;

    public const uint OptExportName = 1;
    public const uint OptAbort = 2;
    public const uint OptList = 3;
    public const uint OptStartTls = 5;
    public const uint OptInfo = 6;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;
    public const uint OptListMetaContext = 9;
    public const uint OptSetMetaContext = 10;
    public const uint OptExtendedHeaders = 11;

    public const uint RepAck = 1;
    public const uint RepServer = 2;
    public const uint RepInfo = 3;
    public const uint RepMetaContext = 4;
    public const uint RepErrUnsup = 0x80000001;
    public const uint RepErrPolicy = 0x80000002;
    public const uint RepErrInvalid = 0x80000003;
    public const uint RepErrTlsReqd = 0x80000005;
    public const uint RepErrUnknown = 0x80000006;
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
    public const ushort ReplyTypeError = 0x8001;

    public const uint EPerm = 1;
    public const uint EIo = 5;
    public const uint EInval = 22;
    public const uint ENoSpc = 28;
    public const uint ENotSup = 95;

    public const uint StateHole = 1;
    public const uint StateZero = 2;
    public const uint StateDirty = 1;
}
