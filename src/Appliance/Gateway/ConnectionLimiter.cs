// [limits] max_connections and max_connections_per_ip: open client connections in all and per
// real client address (after a PROXY header). 0 means no limit. A connection over a limit gets
// 421 4.7.0 and is closed before the session starts (on an implicit-TLS listener, before the
// handshake and without a reply). The refusal names the limit that was hit ("total" or "per_ip",
// the label of portcullis_connection_limit_refusals_total).
using System.Net;

namespace Portcullis.Appliance.Gateway;

internal sealed class ConnectionLimiter(int maxConnections, int maxPerAddress)
{
    private readonly Dictionary<IPAddress, int> _perAddress = [];
    private readonly Lock _lock = new();
    private int _total;

    public int Open { get { lock (_lock) return _total; } }

    public const string TotalLimit = "total";
    public const string PerAddressLimit = "per_ip";

    public Lease? TryEnter(IPAddress? address, out string refusal) => TryEnter(address, out refusal, out _);

    public Lease? TryEnter(IPAddress? address, out string refusal, out string limit)
    {
        limit = "";
        if (address is { IsIPv4MappedToIPv6: true }) address = address.MapToIPv4();
        lock (_lock)
        {
            if (maxConnections > 0 && _total >= maxConnections)
            {
                refusal = "Too many connections";
                limit = TotalLimit;
                return null;
            }
            int mine = address is null ? 0 : _perAddress.GetValueOrDefault(address);
            if (maxPerAddress > 0 && address is not null && mine >= maxPerAddress)
            {
                refusal = $"Too many connections from {address}";
                limit = PerAddressLimit;
                return null;
            }
            _total++;
            if (address is not null) _perAddress[address] = mine + 1;
        }
        refusal = "";
        return new Lease(this, address);
    }

    private void Exit(IPAddress? address)
    {
        lock (_lock)
        {
            _total--;
            if (address is not null && _perAddress.TryGetValue(address, out int n))
            {
                if (n <= 1) _perAddress.Remove(address);
                else _perAddress[address] = n - 1;
            }
        }
    }

    public sealed class Lease(ConnectionLimiter owner, IPAddress? address) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0) owner.Exit(address);
        }
    }
}
