// SHA-512-crypt ("$6$"), as specified by Ulrich Drepper in "Unix crypt using SHA-256 and
// SHA-512" (the algorithm glibc's crypt(3), `openssl passwd -6` and `mkpasswd -m sha-512` use):
// $6$[rounds=N$]salt$hash, salt up to 16 characters, rounds 1000..999999999 (default 5000),
// 86 characters of hash in crypt's own base-64 with its byte permutation.
using System.Security.Cryptography;
using System.Text;

namespace Portcullis.Appliance.Auth;

internal static class ShaCrypt
{
    private const string Alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    private const int DefaultRounds = 5000;

    // The order in which the 64 digest bytes are written, three at a time (the spec's table).
    private static readonly byte[] Order =
    [
        0, 21, 42, 22, 43, 1, 44, 2, 23, 3, 24, 45, 25, 46, 4, 47, 5, 26, 6, 27, 48, 28, 49, 7,
        50, 8, 29, 9, 30, 51, 31, 52, 10, 53, 11, 32, 12, 33, 54, 34, 55, 13, 56, 14, 35, 15, 36, 57,
        37, 58, 16, 59, 17, 38, 18, 39, 60, 40, 61, 19, 62, 20, 41,
    ];

    public static bool IsShaCrypt(string hash) => hash.StartsWith("$6$", StringComparison.Ordinal);

    // The full "$6$..." string for this password and the settings (salt, rounds) of `setting`.
    public static string? Hash(string password, string setting)
    {
        if (!IsShaCrypt(setting)) return null;
        var rest = setting[3..];
        int rounds = DefaultRounds;
        bool customRounds = false;
        if (rest.StartsWith("rounds=", StringComparison.Ordinal))
        {
            int end = rest.IndexOf('$');
            if (end < 0 || !long.TryParse(rest.AsSpan(7, end - 7), System.Globalization.NumberStyles.None, null, out long r)) return null;
            rounds = (int)Math.Clamp(r, 1000, 999_999_999);
            customRounds = true;
            rest = rest[(end + 1)..];
        }
        int dollar = rest.IndexOf('$');
        string salt = dollar < 0 ? rest : rest[..dollar];
        if (salt.Length > 16) salt = salt[..16];

        byte[] p = Encoding.UTF8.GetBytes(password);
        byte[] s = Encoding.UTF8.GetBytes(salt);
        byte[] digest = Compute(p, s, rounds);

        var sb = new StringBuilder(123);
        sb.Append("$6$");
        if (customRounds) sb.Append("rounds=").Append(rounds).Append('$');
        sb.Append(salt).Append('$');
        for (int i = 0; i < 63; i += 3)
            Encode(sb, digest[Order[i]], digest[Order[i + 1]], digest[Order[i + 2]], 4);
        Encode(sb, 0, 0, digest[63], 2);
        return sb.ToString();
    }

    public static bool Verify(string password, string hash) =>
        Hash(password, hash) is { } computed && CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(computed), Encoding.ASCII.GetBytes(hash));

    private static byte[] Compute(byte[] p, byte[] s, int rounds)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA512);
        // B = SHA512(P S P)
        h.AppendData(p); h.AppendData(s); h.AppendData(p);
        byte[] b = h.GetHashAndReset();

        // A = SHA512(P S, B repeated to |P| bytes, then B or P for each bit of |P| from the lowest)
        h.AppendData(p); h.AppendData(s);
        AppendRepeated(h, b, p.Length);
        for (int n = p.Length; n > 0; n >>= 1) h.AppendData((n & 1) != 0 ? b : p);
        byte[] a = h.GetHashAndReset();

        // DP = SHA512(P repeated |P| times); the P sequence is DP repeated to |P| bytes.
        for (int i = 0; i < p.Length; i++) h.AppendData(p);
        byte[] pSeq = Repeat(h.GetHashAndReset(), p.Length);

        // DS = SHA512(S repeated 16 + A[0] times); the S sequence is DS repeated to |S| bytes.
        for (int i = 0; i < 16 + a[0]; i++) h.AppendData(s);
        byte[] sSeq = Repeat(h.GetHashAndReset(), s.Length);

        for (int i = 0; i < rounds; i++)
        {
            h.AppendData((i & 1) != 0 ? pSeq : a);
            if (i % 3 != 0) h.AppendData(sSeq);
            if (i % 7 != 0) h.AppendData(pSeq);
            h.AppendData((i & 1) != 0 ? a : pSeq);
            a = h.GetHashAndReset();
        }
        return a;
    }

    private static void AppendRepeated(IncrementalHash h, byte[] block, int length)
    {
        for (; length > block.Length; length -= block.Length) h.AppendData(block);
        h.AppendData(block, 0, length);
    }

    private static byte[] Repeat(byte[] block, int length)
    {
        var result = new byte[length];
        for (int i = 0; i < length; i++) result[i] = block[i % block.Length];
        return result;
    }

    private static void Encode(StringBuilder sb, byte b2, byte b1, byte b0, int count)
    {
        int w = (b2 << 16) | (b1 << 8) | b0;
        for (int i = 0; i < count; i++)
        {
            sb.Append(Alphabet[w & 0x3f]);
            w >>= 6;
        }
    }
}
