using Dolly.Controllers.Metrics;

namespace Dolly.Controllers;

/// <summary>How <see cref="DollyControllers"/> runs.</summary>
public sealed record ControllerOptions
{
    /// <summary>The CSI driver these controllers serve (StorageClass provisioner, VolumeSnapshotClass driver).</summary>
    public string DriverName { get; init; } = "csi.dolly.io";

    /// <summary>
    /// Also do what kube-controller-manager does for volumes: bind claims to volumes, keep the phases,
    /// release volumes whose claim is gone, the pvc-protection finalizer, and StatefulSets' claims. On for the embedded API
    /// server, off on a real cluster, where kube-controller-manager does it.
    /// </summary>
    public bool BindVolumes { get; init; }

    /// <summary>Take a Lease before reconciling, so only one of several replicas acts.</summary>
    public bool LeaderElection { get; init; }

    /// <summary>Namespace of the leader-election Lease.</summary>
    public string LeaseNamespace { get; init; } = "dolly-system";

    /// <summary>Name of the leader-election Lease.</summary>
    public string LeaseName { get; init; } = "dolly-controllers";

    /// <summary>How long a Lease holds without renewal before another replica may take it.</summary>
    public TimeSpan LeaseDuration { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>How long the leader keeps trying to renew before it gives up leading.</summary>
    public TimeSpan RenewDeadline { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How often candidates try to take, and the leader to renew, the Lease.</summary>
    public TimeSpan RetryPeriod { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>This replica's identity in the Lease and in events.</summary>
    public string Identity { get; init; } = Environment.MachineName + "_" + Guid.NewGuid().ToString("N")[..8];

    /// <summary>Workers per controller.</summary>
    public int Workers { get; init; } = 4;

    /// <summary>First retry delay after a failed reconcile; doubles per failure.</summary>
    public TimeSpan RetryBaseDelay { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>Longest retry delay.</summary>
    public TimeSpan RetryMaxDelay { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Deadline of one CSI call (upstream sidecars use one minute).</summary>
    public TimeSpan CsiTimeout { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>The controllers' clock: schedules and retention, retry delays, event and condition times (a fake one in tests).</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>How often every object is reconciled again even without a change.</summary>
    public TimeSpan Resync { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// The driver's socket also serves the one node every volume is staged on, with Dolly's node service
    /// (dolly.node.v1.DollyNode): <c>dolly up</c> serving its own node. Freeze windows (the dolly.io/freeze
    /// annotation, a schedule's hooks.freeze) are opened there; without it a freeze fails as unreachable.
    /// </summary>
    public bool DriverServesNode { get; init; }

    /// <summary>
    /// Pods on this API server run containers (a real cluster), so schedules' exec hooks run through pods/exec. Off
    /// for the embedded API server of <c>dolly up</c>, which runs no pods: there a schedule with exec hooks reports
    /// that they cannot run.
    /// </summary>
    public bool PodsRunContainers { get; init; } = true;

    /// <summary>Tests: what runs exec hooks instead of pods/exec.</summary>
    internal Hooks.IPodExec? PodExec { get; init; }

    /// <summary>Where the controllers record upstream's snapshot and CSI call series; none when null.</summary>
    public ControllerMetrics? Metrics { get; init; }

    /// <summary>Shown the controllers' cluster cache once it is made (tests read its informers' walk counts).</summary>
    internal Action<Runtime.Cluster>? CacheCreated { get; init; }
}
