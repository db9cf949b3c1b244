using System.Globalization;
using System.Text;

namespace Portcullis.Appliance.Status;

// A Prometheus histogram with fixed bucket bounds, lock-free to observe.
internal sealed class Histogram(params double[] bounds)
{
    private readonly double[] bounds = bounds;
    private readonly long[] counts = new long[bounds.Length + 1];
    private long sumMicros;
    private long total;

    public static Histogram Seconds() => new(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120);

    public long Count => Interlocked.Read(ref total);

    public void Observe(double seconds)
    {
        var i = 0;
        while (i < bounds.Length && seconds > bounds[i])
        {
            i++;
        }

        Interlocked.Increment(ref counts[i]);
        Interlocked.Add(ref sumMicros, (long)(seconds * 1_000_000));
        Interlocked.Increment(ref total);
    }

    public void Write(StringBuilder text, string name, string help)
    {
        text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
        text.Append("# TYPE ").Append(name).Append(" histogram\n");
        long cumulative = 0;
        for (var i = 0; i < bounds.Length; i++)
        {
            cumulative += Interlocked.Read(ref counts[i]);
            text.Append(name).Append("_bucket{le=\"").Append(bounds[i].ToString(CultureInfo.InvariantCulture)).Append("\"} ")
                .Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        cumulative += Interlocked.Read(ref counts[^1]);
        text.Append(name).Append("_bucket{le=\"+Inf\"} ").Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
        text.Append(name).Append("_sum ").Append((Interlocked.Read(ref sumMicros) / 1e6).ToString(CultureInfo.InvariantCulture)).Append('\n');
        text.Append(name).Append("_count ").Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
    }
}
