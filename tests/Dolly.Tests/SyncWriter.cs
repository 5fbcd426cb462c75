namespace Dolly.Tests;

/// <summary>A writer a command running on its own task writes to while the test reads it.</summary>
internal sealed class SyncWriter(StringWriter inner) : TextWriter
{
    public override System.Text.Encoding Encoding => inner.Encoding;

    public override void Write(char value)
    {
        lock (inner)
        {
            inner.Write(value);
        }
    }

    public override void Write(string? value)
    {
        lock (inner)
        {
            inner.Write(value);
        }
    }

    public override void WriteLine(string? value)
    {
        lock (inner)
        {
            inner.WriteLine(value);
        }
    }

    public override string ToString()
    {
        lock (inner)
        {
            return inner.ToString();
        }
    }
}
