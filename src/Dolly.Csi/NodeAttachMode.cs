namespace Dolly.Csi;

/// <summary>How the Node service attaches a volume it stages.</summary>
public enum NodeAttachMode
{
    /// <summary>The kernel's NBD driver when this node has it (<c>/dev/nbd0</c>) and the <c>nbd-client</c> program; nbdfuse and a loop device otherwise.</summary>
    Auto,

    /// <summary>Always nbdfuse (libnbd) exposing the export as a file, under a loop device.</summary>
    Nbdfuse,

    /// <summary>Always the kernel's NBD driver through <c>nbd-client</c>; staging fails where the driver or the program is missing.</summary>
    Kernel,
}
