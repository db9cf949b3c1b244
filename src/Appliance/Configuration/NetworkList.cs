using System.Collections;
using System.Net;
using System.Net.Sockets;

namespace Portcullis.Appliance.Configuration;

// A list of CIDR networks (IPv4 and IPv6) with value equality, so that configuration records
// holding one still compare by content. IPv4-mapped IPv6 addresses match IPv4 networks.
public sealed class NetworkList : IEquatable<NetworkList>, IReadOnlyList<IPNetwork>
{
    private readonly IPNetwork[] _networks;

    public NetworkList(IEnumerable<IPNetwork> networks) => _networks = [.. networks];

    public static NetworkList Empty { get; } = new([]);

    public static NetworkList Loopback { get; } = new([IPNetwork.Parse("127.0.0.0/8"), IPNetwork.Parse("::1/128")]);

    public int Count => _networks.Length;
    public IPNetwork this[int index] => _networks[index];

    public bool Contains(IPAddress? address)
    {
        if (address is null) return false;
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        foreach (var network in _networks)
        {
            if (network.BaseAddress.AddressFamily == address.AddressFamily && network.Contains(address)) return true;
        }
        return false;
    }

    // "10.0.0.0/8, 192.168.1.7, ::1/128": a bare address is a single host.
    public static bool TryParse(string text, out NetworkList list, out string problem)
    {
        var networks = new List<IPNetwork>();
        list = Empty;
        foreach (var entry in ConfigValues.SplitList(text))
        {
            if (!TryParseNetwork(entry, out var network))
            {
                problem = $"entry \"{entry}\" is not an address or network";
                return false;
            }
            networks.Add(network);
        }
        list = new NetworkList(networks);
        problem = "";
        return true;
    }

    internal static bool TryParseNetwork(string entry, out IPNetwork network)
    {
        network = default;
        int slash = entry.IndexOf('/');
        string addressText = slash < 0 ? entry : entry[..slash];
        if (!ConfigValues.TryParseIPAddress(addressText, out var address)) return false;
        if (address!.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        int max = address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        int prefix = max;
        if (slash >= 0 && (!int.TryParse(entry.AsSpan(slash + 1), System.Globalization.NumberStyles.None, null, out prefix) || prefix > max))
            return false;
        // Host bits set below the prefix ("10.1.2.3/8") are a typo more often than not: refuse.
        return IPNetwork.TryParse($"{address}/{prefix}", out network) && network.BaseAddress.Equals(address);
    }

    public bool Equals(NetworkList? other) => other is not null && _networks.AsSpan().SequenceEqual(other._networks);
    public override bool Equals(object? obj) => obj is NetworkList other && Equals(other);
    public override int GetHashCode() => _networks.Length;
    public override string ToString() => string.Join(", ", _networks);
    public IEnumerator<IPNetwork> GetEnumerator() => ((IEnumerable<IPNetwork>)_networks).GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => _networks.GetEnumerator();
}
