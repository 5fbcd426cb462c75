using System.Globalization;

namespace Dolly.Csi;

/// <summary>
/// The kernel NBD driver as the Node service uses it: which <c>/dev/nbdN</c> are free (read from sysfs), and
/// the <c>nbd-client</c> (3.24) command lines that connect one to an export and disconnect it. Pure apart from
/// reading <see cref="DevRoot"/> and <see cref="SysRoot"/>, which tests point at a fake tree.
/// </summary>
/// <param name="DevRoot">Where the device nodes are (<c>/dev</c>).</param>
/// <param name="SysRoot">Where sysfs is mounted (<c>/sys</c>).</param>
/// <param name="Program">The nbd-client program: a name looked up on PATH and in the system directories, or a full path.</param>
internal sealed record KernelNbd(string DevRoot, string SysRoot, string Program)
{
    /// <summary>
    /// The device's logical block size: file systems are made with 4 KiB blocks, volume sizes are multiples of
    /// it, and nbd-client's default (512 on 3.24) would only split every request the kernel sends.
    /// </summary>
    public const int BlockSize = 4096;

    /// <summary>This machine's devices, sysfs and nbd-client.</summary>
    public static KernelNbd System { get; } = new("/dev", "/sys", "nbd-client");

    /// <summary>The first device node, whose presence means the nbd module is loaded.</summary>
    public string FirstDevice => Path.Combine(DevRoot, "nbd0");

    /// <summary>The full path of nbd-client, or null when it is not installed.</summary>
    public string? ProgramPath => Path.IsPathRooted(Program) ? (File.Exists(Program) ? Program : null) : NodeCommands.Find(Program);

    /// <summary>Null when the kernel path can be used here; otherwise what is missing, in words for an operator.</summary>
    public string? Missing()
    {
        var missing = new List<string>(2);
        if (!File.Exists(FirstDevice))
        {
            missing.Add($"no {FirstDevice} (the nbd kernel module is not loaded: modprobe nbd)");
        }

        if (ProgramPath is null)
        {
            missing.Add($"no {Program} program (install the nbd-client package)");
        }

        return missing.Count == 0 ? null : string.Join(" and ", missing);
    }

    /// <summary>
    /// The devices free to connect, lowest number first: the node exists, sysfs shows no connection (no
    /// <c>pid</c> attribute) and a size of 0, and no record of this node names it (a device whose connection
    /// dropped is free to the kernel but still belongs to the volume recorded on it until that is unstaged).
    /// </summary>
    public IReadOnlyList<string> FreeDevices(IReadOnlySet<string> reserved)
    {
        string block = Path.Combine(SysRoot, "block");
        if (!Directory.Exists(block))
        {
            return [];
        }

        var free = new List<(int Index, string Device)>();
        foreach (string dir in Directory.EnumerateFileSystemEntries(block, "nbd*"))
        {
            string name = Path.GetFileName(dir);
            if (!int.TryParse(name.AsSpan(3), NumberStyles.None, CultureInfo.InvariantCulture, out int index))
            {
                continue; // a partition (nbd0p1) or something else
            }

            string device = Path.Combine(DevRoot, name);
            if (File.Exists(device) && !reserved.Contains(device) && !InUse(device))
            {
                free.Add((index, device));
            }
        }

        return free.OrderBy(f => f.Index).Select(f => f.Device).ToList();
    }

    /// <summary>Whether sysfs shows the device connected (a <c>pid</c> attribute) or sized (not yet cleared after a disconnect).</summary>
    public bool InUse(string device) => Connected(device) || SectorCount(device) != 0;

    /// <summary>Whether the device has a connection: the kernel shows the <c>pid</c> attribute exactly then.</summary>
    public bool Connected(string device) => File.Exists(Path.Combine(SysDir(device), "pid"));

    /// <summary>The connected device's size in bytes, or null when it has no connection.</summary>
    public long? SizeBytes(string device)
    {
        long sectors = Connected(device) ? SectorCount(device) : -1;
        return sectors > 0 ? sectors * 512 : null;
    }

    /// <summary>
    /// <c>nbd-client</c> arguments connecting <paramref name="device"/> to export <paramref name="export"/>. A unix
    /// socket is named by <c>-unix</c> and the socket in the host position; TCP gets STARTTLS through nbd-client's
    /// own TLS (GnuTLS): the CA, the client certificate and key when there are any, and the host name the server's
    /// certificate must carry (with a CA and a host name nbd-client verifies both, as <c>NbdTlsClient</c> does).
    /// No <c>-persist</c>: nbd-client 3.24 configures the device through netlink and exits, and only its ioctl
    /// mode reconnects. No <c>-timeout</c>: a slow server delays I/O rather than failing it, as with nbdfuse.
    /// </summary>
    public static IReadOnlyList<string> ConnectArguments(NbdEndpoint endpoint, string export, string device)
    {
        var args = new List<string>();
        if (endpoint.SocketPath is not null)
        {
            args.AddRange(["-unix", endpoint.SocketPath, device]);
        }
        else
        {
            args.AddRange([endpoint.Host!, endpoint.Port.ToString(CultureInfo.InvariantCulture), device]);
        }

        args.AddRange(["-name", export, "-block-size", BlockSize.ToString(CultureInfo.InvariantCulture)]);
        if (endpoint.Tls is { } tls)
        {
            args.AddRange(["-cacertfile", tls.CaFile]);
            if (tls.CertificateFile is not null && tls.KeyFile is not null)
            {
                args.AddRange(["-certfile", tls.CertificateFile, "-keyfile", tls.KeyFile]);
            }

            args.AddRange(["-tlshostname", endpoint.Host!]);
        }

        return args;
    }

    /// <summary><c>nbd-client</c> arguments disconnecting <paramref name="device"/>.</summary>
    public static IReadOnlyList<string> DisconnectArguments(string device) => ["-d", device];

    private string SysDir(string device) => Path.Combine(SysRoot, "block", Path.GetFileName(device));

    /// <summary>The size attribute in 512-byte sectors; -1 when it cannot be read (the device is then not taken for free).</summary>
    private long SectorCount(string device)
    {
        try
        {
            string text = File.ReadAllText(Path.Combine(SysDir(device), "size")).Trim();
            return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long sectors) ? sectors : -1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return -1;
        }
    }
}
