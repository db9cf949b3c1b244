// [limits] max_connections and max_connections_per_ip: open client connections in all and per
// real client address (after a PROXY header). 0 means no limit. A connection over a limit gets
// 421 4.7.0 and is closed before the session starts.
using System.Net;

namespace Portcullis.Appliance.Gateway;

internal sealed class ConnectionLimiter(int maxConnections, int maxPerAddress)
{
    private readonly Dictionary<IPAddress, int> _perAddress = [];
    private readonly Lock _lock = new();
    private int _total;

    public int Open { get { lock (_lock) return _total; } }

    public Lease? TryEnter(IPAddress? address, out string refusal)
    {
        if (address is { IsIPv4MappedToIPv6: true }) address = address.MapToIPv4();
        lock (_lock)
        {
            if (maxConnections > 0 && _total >= maxConnections)
            {
                refusal = "Too many connections";
                return null;
            }
            int mine = address is null ? 0 : _perAddress.GetValueOrDefault(address);
            if (maxPerAddress > 0 && address is not null && mine >= maxPerAddress)
            {
                refusal = $"Too many connections from {address}";
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
