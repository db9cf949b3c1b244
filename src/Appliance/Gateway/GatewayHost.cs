using Portcullis.Appliance.Configuration;

namespace Portcullis.Appliance.Gateway;

// Runs the daemon: listeners, sessions, scanner pool. Written during integration.
internal static class GatewayHost
{
    public static Task<int> RunAsync(GatewayConfig config, CancellationToken stop) =>
        throw new NotImplementedException("integration pending");
}
