using Portcullis.Appliance.Systemd;
using Portcullis.NativeScan;

namespace Portcullis.Appliance.Gateway;

// The running gateway as the systemd watchdog sees it.
internal sealed class WatchedGateway(GatewayRuntime runtime) : IWatchedService
{
    public ScannerPool Scanners => runtime.Scanners;
    public TimeSpan ScanTimeout => runtime.Context.Config.Scan.Timeout;
    public bool IsReloading => runtime.Reloader.IsReloading;
    public bool AcceptLoopsAlive() => runtime.AcceptLoopsAlive();
    public string StatusLine() => runtime.StatusLine();
    public SystemdNotifier Notifier => runtime.Notifier;
}
